//! `cargo xtask bench build`, second part: a whole image build by our
//! `builder build` against `buildah bud`, in the same run, interleaved (one
//! of each in turn, so that a busy machine slows both alike), cold (ours
//! with a fresh `--cache`, buildah with fresh `--root`/`--runroot`
//! storage) and cached (the same build again), printed as medians and
//! ratios. The cases are FROM-scratch images written once as a
//! Containerfile for buildah (`--layers --timestamp 0`, runc), and built
//! by us from the same Containerfile once our builder reads them (`-f`),
//! from an `image.toml` with the same steps until then: COPY
//! busybox-static, COPY a file, RUN, ENV, CMD; and the RUN writing 2,000
//! small files. Cases with a RUN
//! are measured only when our builder runs `[[run]]` steps (it says so
//! otherwise), and one without RUN always is. Then whether two cold builds
//! of each give bit-identical archives (`buildah push` to an
//! `oci-archive:` for buildah).

use super::unpack::{release_builder, which};
use crate::util::{cargo, run_cmd, target_dir};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A build both ways.
struct Case {
    name: &'static str,
    /// The RUN step's shell line, if the case has one.
    run: Option<&'static str>,
}

const CASES: [Case; 3] = [
    Case {
        name: "4 steps (COPY busybox, COPY a file, ENV, CMD)",
        run: None,
    },
    Case {
        name: "5 steps (COPY busybox, COPY a file, RUN, ENV, CMD)",
        run: Some("/bin/busybox mkdir -p /data && echo built > /data/built.txt"),
    },
    Case {
        name: "5 steps, the RUN writing 2,000 small files",
        run: Some(
            "/bin/busybox mkdir /files && i=0 && while [ $i -lt 2000 ]; do echo $i > /files/f$i; i=$((i+1)); done",
        ),
    },
];

pub fn run(rounds: usize) -> Result<()> {
    if !which("buildah") {
        println!("builder build vs buildah bud: skipped, buildah is not installed");
        return Ok(());
    }
    let builder = release_builder()?;
    // What runs a [[run]] step's sandbox, found beside the builder.
    run_cmd(cargo().args(["build", "--release", "--package", "launcher"]))?;
    let init = crate::build_init::build()?;
    let busybox = static_busybox()?;
    let work = target_dir().join("bench-buildah");
    remove_storage(&work)?;
    std::fs::create_dir_all(&work)?;
    let result = run_cases(&builder, &init, &busybox, &work, rounds);
    remove_storage(&work)?;
    result
}

fn run_cases(
    builder: &Path,
    init: &Path,
    busybox: &Path,
    work: &Path,
    rounds: usize,
) -> Result<()> {
    let mut ours_runs = None;
    let mut driver = None;
    for (n, case) in CASES.iter().enumerate() {
        let ctx = work.join(format!("case{n}"));
        write_context(&ctx, case, busybox)?;
        let ours = Ours {
            builder,
            init,
            ctx: &ctx,
            containerfile: reads_containerfiles(builder)?,
        };
        if case.run.is_some() {
            let supported = *ours_runs.get_or_insert(ours.runs_steps(work)?);
            if !supported {
                println!(
                    "{}: skipped, this builder does not run [[run]] steps yet",
                    case.name
                );
                continue;
            }
        }
        let driver = match driver {
            Some(d) => d,
            None => *driver.insert(storage_driver(&ctx, work)?),
        };
        let theirs = Buildah {
            ctx: &ctx,
            driver,
            tag: format!("localhost/cradle-bench/case{n}:latest"),
        };
        println!(
            "{} ({rounds} rounds, median; ours from the {}; buildah storage {driver}, runc):",
            case.name,
            if ours.containerfile {
                "same Containerfile"
            } else {
                "image.toml saying the same"
            }
        );
        measure(&ours, &theirs, work, rounds)?;
    }
    Ok(())
}

/// Times of each build kind, per contender.
#[derive(Default)]
struct Times {
    cold: Vec<Duration>,
    cached: Vec<Duration>,
}

fn measure(ours: &Ours, theirs: &Buildah, work: &Path, rounds: usize) -> Result<()> {
    let (mut our_times, mut their_times) = (Times::default(), Times::default());
    let mut our_digests = Vec::new();
    let mut their_digests = Vec::new();
    for round in 0..rounds.max(2) {
        let cache = work.join(format!("ours-cache-{round}"));
        let out = work.join(format!("ours-{round}.tar"));
        let storage = work.join(format!("buildah-{round}"));
        remove_storage(&cache)?;
        remove_storage(&storage)?;
        our_times.cold.push(ours.build(&cache, &out)?);
        their_times.cold.push(theirs.build(&storage)?);
        our_times.cached.push(ours.build(&cache, &out)?);
        their_times.cached.push(theirs.build(&storage)?);
        // Two cold builds of each, for the bit-identity check.
        if round < 2 {
            our_digests.push(sha256_of(&out)?);
            let pushed = work.join(format!("buildah-{round}.tar"));
            theirs.push(&storage, &pushed)?;
            their_digests.push(sha256_of(&pushed)?);
            let _ = std::fs::remove_file(&pushed);
        }
        let _ = std::fs::remove_file(&out);
        remove_storage(&cache)?;
        remove_storage(&storage)?;
    }
    let (oc, ok) = (median(&mut our_times.cold), median(&mut our_times.cached));
    let (tc, tk) = (
        median(&mut their_times.cold),
        median(&mut their_times.cached),
    );
    println!("  {:<34} {:>8} {:>8}", "", "cold", "cached");
    println!(
        "  {:<34} {:>6.3} s {:>6.3} s",
        "cradle builder build (to archive)", oc, ok
    );
    println!(
        "  {:<34} {:>6.3} s {:>6.3} s",
        "buildah bud (to its storage)", tc, tk
    );
    println!(
        "  {:<34} {:>7.2}x {:>7.2}x   (goal: 0.5x or less)",
        "ours / buildah",
        oc / tc,
        ok / tk
    );
    let identical = |digests: &[String]| {
        if digests.windows(2).all(|w| w[0] == w[1]) {
            format!("bit-identical ({})", &digests[0][..19])
        } else {
            format!(
                "differ ({})",
                digests
                    .iter()
                    .map(|d| &d[..19])
                    .collect::<Vec<_>>()
                    .join(" vs ")
            )
        }
    };
    println!(
        "  two cold builds' archives: ours {}, buildah's {}",
        identical(&our_digests),
        identical(&their_digests)
    );
    Ok(())
}

fn median(times: &mut [Duration]) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64()
}

/// Our side: `builder build` of the case's Containerfile when this builder
/// reads them, else of its `image.toml`.
struct Ours<'a> {
    builder: &'a Path,
    init: &'a Path,
    ctx: &'a Path,
    containerfile: bool,
}

/// Whether `builder build` takes `-f CONTAINERFILE CONTEXT`.
fn reads_containerfiles(builder: &Path) -> Result<bool> {
    let help = Command::new(builder).args(["build", "--help"]).output()?;
    Ok(String::from_utf8_lossy(&help.stdout).contains("--file"))
}

impl Ours<'_> {
    fn command(&self, cache: &Path, out: &Path) -> Command {
        let mut cmd = Command::new(self.builder);
        cmd.arg("build");
        if self.containerfile {
            cmd.arg("-f")
                .arg(self.ctx.join("Containerfile"))
                .arg("-t")
                .arg("localhost/cradle-bench/ours:latest")
                .arg(self.ctx);
        } else {
            cmd.arg(self.ctx.join("image.toml"));
        }
        cmd.arg("-o")
            .arg(out)
            .arg("--init")
            .arg(self.init)
            .arg("--cache")
            .arg(cache)
            .env("SOURCE_DATE_EPOCH", "0")
            .stdin(Stdio::null());
        cmd
    }

    fn build(&self, cache: &Path, out: &Path) -> Result<Duration> {
        timed(self.command(cache, out), "builder build")
    }

    /// Whether this builder runs `[[run]]` steps: a build of a definition
    /// with one either works or says they are not built yet.
    fn runs_steps(&self, work: &Path) -> Result<bool> {
        let cache = work.join("probe-cache");
        let out = work.join("probe.tar");
        let result = self.command(&cache, &out).output()?;
        let _ = std::fs::remove_file(&out);
        remove_storage(&cache)?;
        let stderr = String::from_utf8_lossy(&result.stderr);
        match result.status.success() {
            true => Ok(true),
            false if stderr.contains("not built yet") => Ok(false),
            false => bail!("builder build of `{}` failed: {stderr}", self.ctx.display()),
        }
    }
}

/// Their side: `buildah bud` of the case's Containerfile into a storage of
/// its own.
struct Buildah<'a> {
    ctx: &'a Path,
    driver: &'static str,
    tag: String,
}

impl Buildah<'_> {
    fn command(&self, storage: &Path) -> Command {
        let mut cmd = Command::new("buildah");
        cmd.arg("--root")
            .arg(storage.join("root"))
            .arg("--runroot")
            .arg(storage.join("runroot"))
            .arg("--storage-driver")
            .arg(self.driver)
            .stdin(Stdio::null());
        cmd
    }

    fn build(&self, storage: &Path) -> Result<Duration> {
        let mut cmd = self.command(storage);
        cmd.args([
            "bud",
            "--layers",
            "--timestamp",
            "0",
            "--runtime",
            "runc",
            "--quiet",
        ])
        .arg("-f")
        .arg(self.ctx.join("Containerfile"))
        .arg("-t")
        .arg(&self.tag)
        .arg(self.ctx);
        timed(cmd, "buildah bud")
    }

    fn push(&self, storage: &Path, archive: &Path) -> Result<()> {
        let mut cmd = self.command(storage);
        cmd.args(["push", "--quiet", &self.tag])
            .arg(format!("oci-archive:{}", archive.display()))
            .stdout(Stdio::null());
        run_cmd(&mut cmd)
    }
}

/// Runs `cmd` with its output captured (shown only if it fails), timed.
fn timed(mut cmd: Command, what: &str) -> Result<Duration> {
    run_cmd(&mut Command::new("sync"))?;
    let start = Instant::now();
    let out: Output = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("starting {what}"))?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!(
            "{what} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}

/// overlay when buildah can use it here (a kernel and filesystem that
/// allow it), else vfs.
fn storage_driver(ctx: &Path, work: &Path) -> Result<&'static str> {
    for driver in ["overlay", "vfs"] {
        let storage = work.join(format!("probe-{driver}"));
        let probe = Buildah {
            ctx,
            driver,
            tag: "localhost/cradle-bench/probe:latest".into(),
        };
        let ok = probe.build(&storage).is_ok();
        remove_storage(&storage)?;
        if ok {
            return Ok(driver);
        }
    }
    bail!("buildah bud fails with both the overlay and the vfs storage drivers here")
}

/// The case's build context: busybox, a file, the Containerfile and the
/// image.toml saying the same.
fn write_context(ctx: &Path, case: &Case, busybox: &Path) -> Result<()> {
    std::fs::create_dir_all(ctx)?;
    std::fs::copy(busybox, ctx.join("busybox"))?;
    std::fs::write(ctx.join("hello.txt"), "hello from the build context\n")?;
    let mut containerfile =
        String::from("FROM scratch\nCOPY busybox /bin/busybox\nCOPY hello.txt /etc/hello.txt\n");
    let mut toml = String::from(
        "tag = \"localhost/cradle-bench/ours:latest\"\n[base]\nsource = \"scratch\"\n\
         [[copy]]\nsrc = \"busybox\"\ndest = \"/bin/busybox\"\nmode = \"0755\"\n\
         [[copy]]\nsrc = \"hello.txt\"\ndest = \"/etc/hello.txt\"\n",
    );
    if let Some(line) = case.run {
        let argv = ["/bin/busybox", "sh", "-c", line];
        let json = format!(
            "[{}]",
            argv.iter()
                .map(|a| format!("\"{}\"", a.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect::<Vec<_>>()
                .join(", ")
        );
        containerfile += &format!("RUN {json}\n");
        toml += &format!("[[run]]\ncommand = {json}\n");
    }
    containerfile += "ENV GREETING=hello\nCMD [\"/bin/busybox\", \"sh\"]\n";
    toml += "[config]\nenv = [\"GREETING=hello\"]\ncmd = [\"/bin/busybox\", \"sh\"]\n";
    std::fs::write(ctx.join("Containerfile"), containerfile)?;
    std::fs::write(ctx.join("image.toml"), toml)?;
    Ok(())
}

/// busybox-static (Debian's `busybox-static` puts it at /bin/busybox).
fn static_busybox() -> Result<PathBuf> {
    for path in ["/bin/busybox", "/usr/bin/busybox"] {
        let out = Command::new("file").arg("-L").arg(path).output();
        if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("statically linked")) {
            return Ok(PathBuf::from(path));
        }
    }
    bail!("no static busybox at /bin/busybox (apt-get install busybox-static)")
}

fn sha256_of(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum").arg(path).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.split_whitespace().next().unwrap_or_default();
    anyhow::ensure!(hex.len() == 64, "sha256sum of `{}` failed", path.display());
    Ok(format!("sha256:{hex}"))
}

/// Removes `dir`, unmounting first whatever buildah left mounted in it.
fn remove_storage(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = Command::new("umount").arg("-l").arg(point).status();
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("removing `{}`", dir.display()))
}
