//! `cargo xtask bench run [--image IMAGE.tar] [--runs N]`: wall time of
//! running `/bin/true` from the default image with our launcher (the static
//! build of `cargo xtask build-launcher`, and the glibc release build; warm
//! cache), against `crun run` and `runc run` on a bundle of the
//! same rootfs, `bwrap` and `unshare -fpmuin chroot` of that rootfs; then the
//! cold start (empty cache) against unpacking the same layers with GNU tar.
//! Everything is measured in the same invocation, interleaved (one run of
//! each in turn, so a busy machine slows all alike), and printed with the
//! ratio of each median to crun's.
//!
//! crun refuses this machine's hybrid cgroup layout (v1 controllers plus a
//! cgroup2 mount holding only hugetlb); it runs in a private mount namespace
//! with `/sys/fs/cgroup/unified` unmounted. So the measurements run in this
//! binary re-executed under `unshare -m --propagation private`, for every
//! candidate alike.

use crate::util::{cargo, run_cmd, target_dir};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WARM_RUNS: usize = 100;
const COLD_RUNS: usize = 10;

pub fn run(args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some("--inner") {
        return inner(&args[1..]);
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
    let static_launcher = crate::build_launcher::build()?;
    run_cmd(
        Command::new("unshare")
            .args(["-m", "--propagation", "private"])
            .arg(std::env::current_exe()?)
            .args(["bench", "run", "--inner"])
            .arg(&launcher)
            .arg(&static_launcher)
            .arg(&image)
            .arg(runs.to_string()),
    )
}

/// Inside the private mount namespace: prepare, measure, print.
fn inner(args: &[String]) -> Result<()> {
    let [launcher, static_launcher, image, runs] = args else {
        bail!("usage: bench run --inner LAUNCHER STATIC_LAUNCHER IMAGE RUNS");
    };
    let (launcher, image) = (PathBuf::from(launcher), PathBuf::from(image));
    let static_launcher = PathBuf::from(static_launcher);
    let runs: usize = runs.parse()?;
    if Path::new("/sys/fs/cgroup/unified").exists() {
        let _ = Command::new("umount")
            .arg("/sys/fs/cgroup/unified")
            .status();
    }
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
    let cache = work.join("cache");
    let run_with = |launcher: &Path| {
        let (launcher, image, cache) = (launcher.to_path_buf(), image.clone(), cache.clone());
        move || {
            let mut c = Command::new(&launcher);
            c.env("CRADLE_ROOT", &cache)
                .arg("run")
                .arg(&image)
                .arg("/bin/true");
            c
        }
    };
    let ours = run_with(&static_launcher);
    run_cmd(&mut ours()).context("warming the cache")?;

    let mut candidates: Vec<(String, Box<dyn Fn() -> Command>)> = vec![
        (
            "cradle launcher (static, warm)".into(),
            Box::new(ours.clone()),
        ),
        (
            "cradle launcher (glibc, warm)".into(),
            Box::new(run_with(&launcher)),
        ),
    ];
    for runtime in ["crun", "runc"] {
        if installed(runtime) && write_spec(runtime, &bundle).is_ok() {
            let bundle = bundle.clone();
            let n = std::cell::Cell::new(0u64);
            candidates.push((
                format!("{runtime} run"),
                Box::new(move || {
                    n.set(n.get() + 1);
                    let mut c = Command::new(runtime);
                    c.args(["run", "-b"]).arg(&bundle).arg(format!(
                        "cradle-bench-{}-{}",
                        std::process::id(),
                        n.get()
                    ));
                    c
                }),
            ));
        } else {
            eprintln!("bench run: `{runtime}` is not installed, skipped");
        }
    }
    if installed("bwrap") {
        let rootfs = rootfs.clone();
        candidates.push((
            "bwrap".into(),
            Box::new(move || {
                let mut c = Command::new("bwrap");
                c.args(["--unshare-all", "--die-with-parent", "--bind"])
                    .arg(&rootfs)
                    .args(["/", "--proc", "/proc", "--dev", "/dev", "/bin/true"]);
                c
            }),
        ));
    }
    {
        let rootfs = rootfs.clone();
        candidates.push((
            "unshare -fpmuin chroot".into(),
            Box::new(move || {
                let mut c = Command::new("unshare");
                c.args(["-fpmuin", "chroot"]).arg(&rootfs).arg("/bin/true");
                c
            }),
        ));
    }
    let warm = interleaved(runs, &candidates, &|| {});

    let blobs = layer_blobs(&image, &work.join("blobs"))?;
    let out = work.join("tar-out");
    let tar_cmd = {
        let out = out.clone();
        move || {
            let script: Vec<String> = blobs
                .iter()
                .map(|b| format!("tar -xzf '{}' -C '{}'", b.display(), out.display()))
                .collect();
            let mut c = Command::new("sh");
            c.arg("-c").arg(script.join(" && "));
            c
        }
    };
    let cold_candidates: Vec<(String, Box<dyn Fn() -> Command>)> = vec![
        ("cradle launcher (static, cold)".into(), Box::new(ours)),
        ("GNU tar -xzf (layers)".into(), Box::new(tar_cmd)),
    ];
    let cold = interleaved(COLD_RUNS, &cold_candidates, &|| {
        let _ = std::fs::remove_dir_all(&cache);
        let _ = std::fs::remove_dir_all(&out);
        let _ = std::fs::create_dir_all(&out);
    });
    print_table(&candidates, &warm, &cold, runs);
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// One run of each candidate in turn, `runs` rounds, `setup` (untimed)
/// before each run. A candidate that fails once is dropped (None).
fn interleaved(runs: usize, candidates: &Candidates, setup: &dyn Fn()) -> Vec<Option<Stats>> {
    let mut times: Vec<Option<Vec<Duration>>> =
        candidates.iter().map(|_| Some(Vec::new())).collect();
    for _ in 0..runs {
        for ((name, cmd), slot) in candidates.iter().zip(times.iter_mut()) {
            let Some(list) = slot else { continue };
            setup();
            match time_one(cmd()) {
                Ok(d) => list.push(d),
                Err(e) => {
                    eprintln!("bench run: {name} failed: {e:#}");
                    *slot = None;
                }
            }
        }
    }
    times.into_iter().map(|t| t.map(stats)).collect()
}

fn time_one(mut c: Command) -> Result<Duration> {
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let out = c.output().with_context(|| format!("starting {c:?}"))?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!(
            "{c:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}

fn stats(mut times: Vec<Duration>) -> Stats {
    times.sort();
    let mean = times.iter().sum::<Duration>() / times.len().max(1) as u32;
    Stats {
        mean,
        median: times.get(times.len() / 2).copied().unwrap_or_default(),
    }
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

type Candidates = [(String, Box<dyn Fn() -> Command>)];

fn print_table(
    candidates: &Candidates,
    warm: &[Option<Stats>],
    cold: &[Option<Stats>],
    runs: usize,
) {
    let rows: Vec<(&String, &Option<Stats>)> =
        candidates.iter().map(|(n, _)| n).zip(warm).collect();
    let crun = rows
        .iter()
        .find(|(n, _)| *n == "crun run")
        .and_then(|(_, s)| **s);
    println!("bench run: /bin/true, {runs} runs each (warm), {COLD_RUNS} cold");
    println!(
        "{:<32} {:>10} {:>10} {:>10}",
        "", "mean ms", "median ms", "vs crun"
    );
    for (name, stats) in &rows {
        match stats {
            Some(s) => {
                let ratio = crun.map_or("-".into(), |c| {
                    format!("{:.2}x", ms(s.median) / ms(c.median))
                });
                println!(
                    "{name:<32} {:>10.2} {:>10.2} {ratio:>10}",
                    ms(s.mean),
                    ms(s.median)
                );
            }
            None => println!("{name:<32} {:>10} {:>10} {:>10}", "-", "-", "-"),
        }
    }
    let (Some(ours), Some(tar)) = (cold[0], cold[1]) else {
        println!("cold start: not measured (see the errors above)");
        return;
    };
    println!(
        "{:<32} {:>10.2} {:>10.2} {:>9.2}x GNU tar",
        "cradle launcher (static, cold)",
        ms(ours.mean),
        ms(ours.median),
        ms(ours.median) / ms(tar.median)
    );
    println!(
        "{:<32} {:>10.2} {:>10.2}",
        "GNU tar -xzf (layers)",
        ms(tar.mean),
        ms(tar.median)
    );
}
