//! `cargo xtask bench init`: our static init against tini (tini-static),
//! dumb-init and catatonit, whichever are installed (this task installs
//! nothing), each as PID 1 of a new PID namespace, measured in one run and
//! printed side by side with ratios to tini.
//!
//! The workloads that make orphans and echo signals are this very binary,
//! run as `xtask bench init --helper …` under each init.

use crate::build_init;
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ORPHANS: usize = 20_000;
const ROUND_TRIPS: usize = 200;
const WALL_RUNS: usize = 200;

/// One init under test.
struct Candidate {
    name: String,
    path: PathBuf,
}

/// What was measured for one init; None where it could not be.
#[derive(Default)]
struct Row {
    size: Option<f64>,
    rss_kib: Option<f64>,
    wall_ms: Option<f64>,
    instructions: Option<f64>,
    reap_ms: Option<f64>,
    round_trip_us: Option<f64>,
}

pub fn run(args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some("--helper") {
        return helper(&args[1..]);
    }
    if !args.is_empty() {
        bail!("usage: cargo xtask bench init");
    }
    let ours = build_init::build()?;
    let candidates = candidates(ours);
    let only = std::env::var("CRADLE_BENCH").unwrap_or_default();
    let walls: Vec<Option<f64>> = if only.is_empty() || only.split(',').any(|k| k == "wall") {
        eprintln!("bench init: wall time, {WALL_RUNS} rounds of every init in turn");
        let walls = wall_ms_all(&candidates);
        candidates
            .iter()
            .zip(walls)
            .map(|(c, wall)| {
                wall.map_err(|err| eprintln!("bench init: {}: wall time: {err:#}", c.name))
                    .ok()
            })
            .collect()
    } else {
        candidates.iter().map(|_| None).collect()
    };
    let mut rows = Vec::new();
    for (c, wall_ms) in candidates.iter().zip(walls) {
        eprintln!("bench init: measuring {} ({})", c.name, c.path.display());
        rows.push(Row {
            wall_ms,
            ..measure(c)
        });
    }
    print_table(&candidates, &rows);
    Ok(())
}

/// Ours first, then tini (the reference for ratios), dumb-init, catatonit.
fn candidates(ours: PathBuf) -> Vec<Candidate> {
    let mut found = vec![Candidate {
        name: "cradle-init".into(),
        path: ours,
    }];
    let tini = which("tini-static").or_else(|| which("tini"));
    for (name, path) in [
        ("tini", tini),
        ("dumb-init", which("dumb-init")),
        ("catatonit", which("catatonit")),
    ] {
        match path {
            Some(path) => found.push(Candidate {
                name: path
                    .file_name()
                    .map_or(name.into(), |n| n.to_string_lossy().into_owned()),
                path,
            }),
            None => eprintln!("bench init: `{name}` is not installed; left out"),
        }
    }
    found
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn measure(c: &Candidate) -> Row {
    // CRADLE_BENCH=rtt,reap (say) measures only those.
    let only = std::env::var("CRADLE_BENCH").unwrap_or_default();
    let want = |key: &str| only.is_empty() || only.split(',').any(|k| k == key);
    // A measurement that fails is reported and shown as n/a.
    let ok = |what: &str, result: Result<f64>| match result {
        Ok(v) => Some(v),
        Err(err) => {
            eprintln!("bench init: {}: {what}: {err:#}", c.name);
            None
        }
    };
    Row {
        size: c.path.metadata().ok().map(|m| m.len() as f64),
        rss_kib: want("rss")
            .then(|| ok("resident memory", rss_kib(c)))
            .flatten(),
        wall_ms: None,
        instructions: want("instructions")
            .then(|| ok("instructions", instructions(c)))
            .flatten(),
        reap_ms: want("reap")
            .then(|| ok("reaping", median_of(3, || reap_ms(c))))
            .flatten(),
        round_trip_us: want("rtt")
            .then(|| ok("signal round trip", median_of(3, || round_trip_us(c))))
            .flatten(),
    }
}

/// `unshare -fp --mount-proc --kill-child INIT -- ARGS…`.
fn under_init(c: &Candidate, args: &[&str]) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(&c.path)
        .arg("--")
        .args(args);
    cmd.env_remove("RUST_BACKTRACE");
    cmd
}

/// The init's pid (in our namespace): the child `unshare` forked.
fn init_pid(unshare: &Child) -> Result<i32> {
    let me = unshare.id();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let children =
            std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")).unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            return Ok(pid.parse()?);
        }
        if Instant::now() > deadline {
            bail!("unshare started no init");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn stop(mut unshare: Child) {
    let _ = unshare.kill();
    let _ = unshare.wait();
}

/// VmRSS of the init as PID 1 while its workload sleeps.
fn rss_kib(c: &Candidate) -> Result<f64> {
    let unshare = under_init(c, &["sleep", "5"])
        .spawn()
        .context("starting unshare")?;
    let pid = init_pid(&unshare)?;
    std::thread::sleep(Duration::from_millis(500));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    stop(unshare);
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .context("no VmRSS for the init")
}

/// Median wall time of `unshare -fp --mount-proc INIT -- /bin/true` for
/// every candidate, run in turns (one of each per round) rather than one
/// after the other as hyperfine would: on a shared machine the load drifts
/// within seconds, and turns expose every init to the same drift.
fn wall_ms_all(candidates: &[Candidate]) -> Vec<Result<f64>> {
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(WALL_RUNS); candidates.len()];
    let mut failed: Vec<Option<anyhow::Error>> = candidates.iter().map(|_| None).collect();
    for round in 0..WALL_RUNS + 10 {
        for (i, c) in candidates.iter().enumerate() {
            if failed[i].is_some() {
                continue;
            }
            let started = Instant::now();
            let status = Command::new("unshare")
                .args(["-fp", "--mount-proc"])
                .arg(&c.path)
                .args(["--", "/bin/true"])
                .status();
            let took = started.elapsed().as_secs_f64() * 1000.0;
            match status {
                // The first ten rounds warm the caches.
                Ok(s) if s.success() => {
                    if round >= 10 {
                        times[i].push(took);
                    }
                }
                Ok(s) => {
                    failed[i] = Some(anyhow::anyhow!(
                        "`{} -- /bin/true` failed: {s}",
                        c.path.display()
                    ))
                }
                Err(e) => failed[i] = Some(anyhow::Error::from(e).context("running unshare")),
            }
        }
    }
    times
        .into_iter()
        .zip(failed)
        .map(|(mut t, failed)| match failed {
            Some(err) => Err(err),
            None => {
                t.sort_by(f64::total_cmp);
                Ok(t[t.len() / 2])
            }
        })
        .collect()
}

/// Instructions the init itself executes for `-- /bin/true`: callgrind
/// follows only the process it starts (no --trace-children), PID 1 here;
/// the forked child is written to a file of its own and not counted.
fn instructions(c: &Candidate) -> Result<f64> {
    if which("valgrind").is_none() {
        bail!("valgrind is not installed");
    }
    let dir = std::env::temp_dir().join(format!("cradle-bench-cg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let status = Command::new("unshare")
        .args([
            "-fp",
            "--mount-proc",
            "valgrind",
            "--tool=callgrind",
            "--log-file=/dev/null",
        ])
        .arg(format!("--callgrind-out-file={}/cg.%p", dir.display()))
        .arg(&c.path)
        .args(["--", "/bin/true"])
        .stderr(Stdio::null())
        .status()
        .context("running valgrind")?;
    if !status.success() {
        bail!("valgrind run failed: {status}");
    }
    let text = std::fs::read_to_string(dir.join("cg.1"))
        .context("reading callgrind's output for PID 1")?;
    let _ = std::fs::remove_dir_all(&dir);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.trim().parse().ok())
        .context("no summary in callgrind's output")
}

/// Time from 20,000 orphans ending at once to none being left.
fn reap_ms(c: &Candidate) -> Result<f64> {
    let me = std::env::current_exe()?;
    let me = me.to_string_lossy();
    let orphans = ORPHANS.to_string();
    let mut cmd = under_init(c, &[&me, "bench", "init", "--helper", "orphans", &orphans]);
    let out = run_limited(&mut cmd, Duration::from_secs(180))?;
    let ms = out
        .lines()
        .find_map(|l| l.strip_prefix("reaped_ms="))
        .context("the helper reported nothing")?;
    Ok(ms.trim().parse()?)
}

/// Median time from `kill(PID 1, SIGTERM)` to the workload saying it got it.
fn round_trip_us(c: &Candidate) -> Result<f64> {
    let me = std::env::current_exe()?;
    let me = me.to_string_lossy();
    let n = ROUND_TRIPS.to_string();
    let mut unshare = under_init(c, &[&me, "bench", "init", "--helper", "signals", &n])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting unshare")?;
    let pid = init_pid(&unshare)?;
    let mut lines = BufReader::new(unshare.stdout.take().context("no stdout")?).lines();
    let mut next = || -> Result<String> { Ok(lines.next().context("the helper ended early")??) };
    if next()? != "ready" {
        bail!("the helper did not start");
    }
    let mut times = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let sent = Instant::now();
        // SAFETY: no pointers; pid is the init we started.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            bail!("kill: {}", std::io::Error::last_os_error());
        }
        next()?;
        times.push(sent.elapsed().as_secs_f64() * 1e6);
    }
    stop(unshare);
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// The median of `n` runs of `f`, which are noisy on a shared machine.
fn median_of(n: usize, mut f: impl FnMut() -> Result<f64>) -> Result<f64> {
    let mut values = (0..n).map(|_| f()).collect::<Result<Vec<f64>>>()?;
    values.sort_by(f64::total_cmp);
    Ok(values[values.len() / 2])
}

fn run_limited(cmd: &mut Command, limit: Duration) -> Result<String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .context("starting unshare")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let deadline = Instant::now() + limit;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            stop(child);
            bail!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(reader.join().unwrap_or_default())
}

/// A table row: its label, how to read it from a [`Row`], its decimals.
type Metric = (&'static str, fn(&Row) -> Option<f64>, usize);

fn print_table(candidates: &[Candidate], rows: &[Row]) {
    let tini = candidates.iter().position(|c| c.name.starts_with("tini"));
    let metrics: [Metric; 6] = [
        ("binary size (bytes)", |r| r.size, 0),
        ("RSS of PID 1, workload sleeping (KiB)", |r| r.rss_kib, 0),
        (
            "wall, unshare -fp --mount-proc INIT -- /bin/true (ms, median)",
            |r| r.wall_ms,
            2,
        ),
        (
            "instructions of the init itself for that (callgrind)",
            |r| r.instructions,
            0,
        ),
        ("reap 20,000 orphans, zero left (ms)", |r| r.reap_ms, 1),
        (
            "signal round trip, kill PID 1 to workload (µs, median)",
            |r| r.round_trip_us,
            1,
        ),
    ];
    let width = 14;
    print!("{:<62}", "");
    for c in candidates {
        print!("{:>width$}", c.name);
    }
    println!();
    for (label, get, decimals) in metrics {
        print!("{label:<62}");
        for row in rows {
            match get(row) {
                Some(v) => print!("{:>width$.decimals$}", v),
                None => print!("{:>width$}", "n/a"),
            }
        }
        println!();
        if let Some(t) = tini.and_then(|t| get(&rows[t])) {
            print!("{:<62}", "  ratio to tini");
            for row in rows {
                match get(row) {
                    Some(v) if t > 0.0 => print!("{:>width$.2}", v / t),
                    _ => print!("{:>width$}", "n/a"),
                }
            }
            println!();
        }
    }
}

/// The workloads, run under each init.
fn helper(args: &[String]) -> Result<()> {
    let n: usize = args.get(1).map(|n| n.parse()).transpose()?.unwrap_or(1);
    match args.first().map(String::as_str) {
        Some("orphans") => orphans(n),
        Some("signals") => echo_signals(n),
        _ => bail!("unknown helper {args:?}"),
    }
}

/// Makes `n` zombies whose parent then dies, so that they all land on
/// PID 1 at once (the kernel sends it one SIGCHLD per zombie, which
/// coalesce), then times until it has reaped them all. The children end
/// before the clock starts, so it measures the reaping, not their exits.
fn orphans(n: usize) -> Result<()> {
    // SAFETY: the helper is single-threaded; the children only _exit.
    let middle = unsafe { libc::fork() };
    if middle == 0 {
        for _ in 0..n {
            // SAFETY: as above.
            if unsafe { libc::fork() } == 0 {
                // SAFETY: ends the child at once.
                unsafe { libc::_exit(0) };
            }
        }
        // Let every child end (unreaped: zombies), then orphan them all.
        std::thread::sleep(Duration::from_secs(1));
        // SAFETY: ends the middle process.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: waiting for the middle process only.
    unsafe { libc::waitpid(middle, std::ptr::null_mut(), 0) };
    // PID 1's children, zombies included until reaped, straight from the
    // kernel: cheaper to poll than a walk of /proc, so the clock measures
    // the init more than the measuring.
    let started = Instant::now();
    let me = std::process::id().to_string();
    loop {
        let children = std::fs::read_to_string("/proc/1/task/1/children")
            .context("reading PID 1's children")?;
        let others = children.split_whitespace().filter(|pid| *pid != me).count();
        if others == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("{others} processes still there after 120 s");
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    println!("reaped_ms={:.1}", started.elapsed().as_secs_f64() * 1000.0);
    println!("zombies=0");
    Ok(())
}

/// Prints a line for each SIGTERM, `n` times.
fn echo_signals(n: usize) -> Result<()> {
    use std::io::Write;
    // SAFETY: a zeroed sigset is valid storage for sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: a live sigset; blocking SIGTERM so sigwait can take it.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    for _ in 0..n {
        let mut sig = 0;
        // SAFETY: a live sigset and int.
        unsafe { libc::sigwait(&set, &mut sig) };
        writeln!(out, "got")?;
        out.flush()?;
    }
    Ok(())
}
