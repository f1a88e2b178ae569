//! `cargo xtask bench run [--image IMAGE.tar] [--runs N]`: wall time of
//! running `/bin/true` from the default image with our launcher (release
//! build, warm cache), against `crun run` and `runc run` on a bundle of the
//! same rootfs, `bwrap` and `unshare -fpmuin chroot` of that rootfs; then the
//! cold start (empty cache) against unpacking the same layers with GNU tar.
//! Everything is measured in the same invocation and printed with ratios.
//!
//! crun refuses this machine's hybrid cgroup layout (v1 controllers plus a
//! cgroup2 mount holding only hugetlb); it runs in a private mount namespace
//! with `/sys/fs/cgroup/unified` unmounted, so its runs are timed by this
//! binary re-run as `bench run --helper` under `unshare -m`.

use crate::util::{cargo, run_cmd, target_dir};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WARM_RUNS: usize = 100;
const COLD_RUNS: usize = 10;

pub fn run(args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some("--helper") {
        return helper(&args[1..]);
    }
    let mut image = None;
    let mut runs = WARM_RUNS;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--image" => image = it.next().map(PathBuf::from),
            "--runs" => runs = it.next().and_then(|n| n.parse().ok()).context("--runs N")?,
            other => {
                bail!("usage: cargo xtask bench run [--image IMAGE.tar] [--runs N] (got `{other}`)")
            }
        }
    }
    let image = match image {
        Some(i) => i,
        None => crate::build_image::run(&[])?,
    };
    let launcher = build_launcher()?;
    let work = target_dir().join("bench-run");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let bundle = work.join("bundle");
    let rootfs = bundle.join("rootfs");
    run_cmd(
        Command::new(&launcher)
            .arg("export")
            .arg(&image)
            .arg(&rootfs),
    )?;

    let mut rows: Vec<(String, Option<Stats>)> = Vec::new();
    let cache = work.join("cache");
    let ours = || {
        let mut c = Command::new(&launcher);
        c.env("CRADLE_ROOT", &cache)
            .arg("run")
            .arg(&image)
            .arg("/bin/true");
        c
    };
    run_cmd(&mut ours()).context("warming the cache")?;
    rows.push(("cradle launcher (warm)".into(), Some(time(runs, ours)?)));
    rows.push(("crun run".into(), crun(&bundle, runs).ok().flatten()));
    rows.push((
        "runc run".into(),
        oci_runtime("runc", &bundle, runs).ok().flatten(),
    ));
    rows.push(("bwrap".into(), bwrap(&rootfs, runs).ok().flatten()));
    rows.push((
        "unshare -fpmuin chroot".into(),
        unshare(&rootfs, runs).ok().flatten(),
    ));

    let cold = time_with_setup(
        COLD_RUNS,
        || {
            let _ = std::fs::remove_dir_all(&cache);
        },
        ours,
    )?;
    let blobs = layer_blobs(&image, &work.join("blobs"))?;
    let out = work.join("tar-out");
    let tar = time_with_setup(
        COLD_RUNS,
        || {
            let _ = std::fs::remove_dir_all(&out);
            let _ = std::fs::create_dir_all(&out);
        },
        || {
            let mut c = Command::new("sh");
            let script: Vec<String> = blobs
                .iter()
                .map(|b| format!("tar -xzf '{}' -C '{}'", b.display(), out.display()))
                .collect();
            c.arg("-c").arg(script.join(" && "));
            c
        },
    )?;
    print_table(&rows, &cold, &tar, runs);
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

fn build_launcher() -> Result<PathBuf> {
    run_cmd(cargo().args(["build", "--release", "--package", "launcher"]))?;
    Ok(target_dir().join("release/launcher"))
}

#[derive(Debug, Clone, Copy)]
struct Stats {
    mean: Duration,
    median: Duration,
}

fn time(runs: usize, cmd: impl Fn() -> Command) -> Result<Stats> {
    time_with_setup(runs, || {}, cmd)
}

/// Runs `cmd` `runs` times, `setup` (untimed) before each, and returns the
/// mean and median wall time. Fails when a run fails.
fn time_with_setup(runs: usize, setup: impl Fn(), cmd: impl Fn() -> Command) -> Result<Stats> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        setup();
        let mut c = cmd();
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let out = c.output().with_context(|| format!("starting {c:?}"))?;
        times.push(start.elapsed());
        if !out.status.success() {
            bail!(
                "{c:?} failed: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    times.sort();
    let mean = times.iter().sum::<Duration>() / runs.max(1) as u32;
    Ok(Stats {
        mean,
        median: times[times.len() / 2],
    })
}

fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// An OCI bundle's config.json from `<runtime> spec`, running /bin/true
/// without a terminal.
fn write_spec(runtime: &str, bundle: &Path) -> Result<()> {
    let _ = std::fs::remove_file(bundle.join("config.json"));
    run_cmd(Command::new(runtime).arg("spec").current_dir(bundle))?;
    let path = bundle.join("config.json");
    let spec = std::fs::read_to_string(&path)?;
    let spec = spec
        .replacen("\"terminal\": true", "\"terminal\": false", 1)
        .replacen("\"sh\"", "\"/bin/true\"", 1);
    std::fs::write(&path, spec)?;
    Ok(())
}

fn oci_runtime(runtime: &str, bundle: &Path, runs: usize) -> Result<Option<Stats>> {
    if !installed(runtime) {
        eprintln!("bench run: `{runtime}` is not installed, skipped");
        return Ok(None);
    }
    write_spec(runtime, bundle)?;
    let n = std::cell::Cell::new(0);
    let stats = time(runs, || {
        n.set(n.get() + 1);
        let mut c = Command::new(runtime);
        c.args(["run", "-b"]).arg(bundle).arg(format!(
            "cradle-bench-{}-{}",
            std::process::id(),
            n.get()
        ));
        c
    });
    report(runtime, stats)
}

fn report(what: &str, stats: Result<Stats>) -> Result<Option<Stats>> {
    match stats {
        Ok(s) => Ok(Some(s)),
        Err(e) => {
            eprintln!("bench run: {what} failed: {e:#}");
            Ok(None)
        }
    }
}

/// crun, timed by this binary re-run in a private mount namespace without
/// the hybrid cgroup2 mount.
fn crun(bundle: &Path, runs: usize) -> Result<Option<Stats>> {
    if !installed("crun") {
        eprintln!("bench run: `crun` is not installed, skipped");
        return Ok(None);
    }
    write_spec("crun", bundle)?;
    let me = std::env::current_exe()?;
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private"])
        .arg(me)
        .args(["bench", "run", "--helper", "crun"])
        .arg(bundle)
        .arg(runs.to_string())
        .output()?;
    if !out.status.success() {
        eprintln!(
            "bench run: crun failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut nums = text
        .split_whitespace()
        .filter_map(|n| n.parse::<u64>().ok());
    match (nums.next(), nums.next()) {
        (Some(mean), Some(median)) => Ok(Some(Stats {
            mean: Duration::from_nanos(mean),
            median: Duration::from_nanos(median),
        })),
        _ => Ok(None),
    }
}

/// `--helper crun BUNDLE RUNS`, inside `unshare -m`: prints mean and median
/// nanoseconds.
fn helper(args: &[String]) -> Result<()> {
    let [what, bundle, runs] = args else {
        bail!("usage: bench run --helper crun BUNDLE RUNS");
    };
    if what != "crun" {
        bail!("unknown helper `{what}`");
    }
    if Path::new("/sys/fs/cgroup/unified").exists() {
        let _ = Command::new("umount")
            .arg("/sys/fs/cgroup/unified")
            .status();
    }
    let runs: usize = runs.parse()?;
    let n = std::cell::Cell::new(0);
    let stats = time(runs, || {
        n.set(n.get() + 1);
        let mut c = Command::new("crun");
        c.args(["run", "-b", bundle]).arg(format!(
            "cradle-bench-{}-{}",
            std::process::id(),
            n.get()
        ));
        c
    })?;
    println!("{} {}", stats.mean.as_nanos(), stats.median.as_nanos());
    Ok(())
}

fn bwrap(rootfs: &Path, runs: usize) -> Result<Option<Stats>> {
    if !installed("bwrap") {
        eprintln!("bench run: `bwrap` is not installed, skipped");
        return Ok(None);
    }
    let stats = time(runs, || {
        let mut c = Command::new("bwrap");
        c.args(["--unshare-all", "--die-with-parent", "--bind"])
            .arg(rootfs)
            .args(["/", "--proc", "/proc", "--dev", "/dev", "/bin/true"]);
        c
    });
    report("bwrap", stats)
}

fn unshare(rootfs: &Path, runs: usize) -> Result<Option<Stats>> {
    let stats = time(runs, || {
        let mut c = Command::new("unshare");
        c.args(["-fpmuin", "chroot"]).arg(rootfs).arg("/bin/true");
        c
    });
    report("unshare", stats)
}

/// The gzip layer blobs of `image`, extracted (untimed) for GNU tar.
fn layer_blobs(image: &Path, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    run_cmd(Command::new("tar").arg("-xf").arg(image).arg("-C").arg(dir))?;
    let mut blobs = Vec::new();
    let sha = dir.join("blobs/sha256");
    for entry in std::fs::read_dir(&sha).with_context(|| format!("reading `{}`", sha.display()))? {
        let path = entry?.path();
        let mut magic = [0u8; 2];
        use std::io::Read;
        if std::fs::File::open(&path)?.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b] {
            blobs.push(path);
        }
    }
    Ok(blobs)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn print_table(rows: &[(String, Option<Stats>)], cold: &Stats, tar: &Stats, runs: usize) {
    let crun = rows
        .iter()
        .find(|(n, _)| n == "crun run")
        .and_then(|(_, s)| *s);
    println!("bench run: /bin/true, {runs} runs each (warm), {COLD_RUNS} cold");
    println!(
        "{:<26} {:>10} {:>10} {:>10}",
        "", "mean ms", "median ms", "vs crun"
    );
    for (name, stats) in rows {
        match stats {
            Some(s) => {
                let ratio = crun.map_or("-".into(), |c| format!("{:.2}x", ms(s.mean) / ms(c.mean)));
                println!(
                    "{name:<26} {:>10.2} {:>10.2} {ratio:>10}",
                    ms(s.mean),
                    ms(s.median)
                );
            }
            None => println!("{name:<26} {:>10} {:>10} {:>10}", "-", "-", "-"),
        }
    }
    println!(
        "{:<26} {:>10.2} {:>10.2} {:>9.2}x GNU tar",
        "cradle launcher (cold)",
        ms(cold.mean),
        ms(cold.median),
        ms(cold.mean) / ms(tar.mean)
    );
    println!(
        "{:<26} {:>10.2} {:>10.2}",
        "GNU tar -xzf (layers)",
        ms(tar.mean),
        ms(tar.median)
    );
}
