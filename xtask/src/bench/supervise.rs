//! `cargo xtask bench supervise`: our init supervising 20 services (19
//! `sleep` and a small TCP server) against s6 (s6-svscan and one
//! s6-supervise per service) and supervisord, whichever are installed,
//! each as PID 1 of a new PID namespace, measured in one run and printed
//! side by side with ratios to ours.
//!
//! The TCP server is this very binary, run as
//! `xtask bench supervise --helper serve PORT`.

use crate::build_init;
use anyhow::{Context, Result, bail};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SLEEPERS: usize = 19;
const IDLE: Duration = Duration::from_secs(60);
const LIMIT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Ours,
    S6,
    Supervisord,
}

struct Candidate {
    name: &'static str,
    kind: Kind,
    path: PathBuf,
}

/// What was measured; None where it could not be.
#[derive(Default)]
struct Row {
    private_kib: Option<f64>,
    pss_kib: Option<f64>,
    up_ms: Option<f64>,
    restart_ms: Option<f64>,
    idle_switches: Option<f64>,
    idle_cpu_ms: Option<f64>,
    stop_ms: Option<f64>,
}

pub fn run(args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some("--helper") {
        return helper(&args[1..]);
    }
    if !args.is_empty() {
        bail!("usage: cargo xtask bench supervise");
    }
    let ours = build_init::build()?;
    let mut candidates = vec![Candidate {
        name: "cradle-init",
        kind: Kind::Ours,
        path: ours,
    }];
    for (name, kind, program) in [
        ("s6", Kind::S6, "s6-svscan"),
        ("supervisord", Kind::Supervisord, "supervisord"),
    ] {
        match which(program) {
            Some(path) => candidates.push(Candidate { name, kind, path }),
            None => eprintln!("bench supervise: no {program} (Debian package `{name}`); skipped"),
        }
    }
    let mut rows = Vec::new();
    for c in &candidates {
        eprintln!(
            "bench supervise: measuring {} ({})",
            c.name,
            c.path.display()
        );
        rows.push(measure(c).unwrap_or_else(|err| {
            eprintln!("bench supervise: {}: {err:#}", c.name);
            Row::default()
        }));
    }
    print_table(&candidates, &rows);
    Ok(())
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

/// One whole run: start, wait for all up, measure memory, idle, restart
/// latency, then stop.
fn measure(c: &Candidate) -> Result<Row> {
    let dir = crate::util::target_dir()
        .join("bench-supervise")
        .join(c.name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let mut cmd = setup(c, &dir, port)?;
    let started = Instant::now();
    let mut unshare = cmd.spawn().context("starting unshare")?;
    let result = measure_running(c, &mut unshare, started, port);
    let _ = unshare.kill();
    let _ = unshare.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure_running(c: &Candidate, unshare: &mut Child, started: Instant, port: u16) -> Result<Row> {
    let pid1 = init_pid(unshare)?;
    wait_until("all up", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && sleepers(pid1).len() == SLEEPERS
    })?;
    let up_ms = started.elapsed().as_secs_f64() * 1e3;
    // Settle (s6-supervise restarts a service after a second at most once).
    std::thread::sleep(Duration::from_secs(2));
    let supervisors = supervisor_pids(c, pid1);
    let (private_kib, pss_kib) = memory(&supervisors);
    let before = switches(&supervisors);
    let cpu_before = cpu_ms(&supervisors);
    std::thread::sleep(IDLE);
    let idle_switches = switches(&supervisors) - before;
    let idle_cpu_ms = cpu_ms(&supervisors) - cpu_before;

    let victims = sleepers(pid1);
    let victim = victims[0];
    let t = Instant::now();
    // SAFETY: no pointers; a sleep of the supervisor under test.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    wait_until("the restart", || {
        let now = sleepers(pid1);
        now.len() == SLEEPERS && !now.contains(&victim)
    })?;
    let restart_ms = t.elapsed().as_secs_f64() * 1e3;

    let t = Instant::now();
    // SAFETY: no pointers; PID 1 of the namespace under test.
    unsafe { libc::kill(pid1, libc::SIGTERM) };
    let deadline = Instant::now() + LIMIT;
    while unshare.try_wait()?.is_none() {
        if Instant::now() > deadline {
            bail!("still running {LIMIT:?} after SIGTERM");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let stop_ms = t.elapsed().as_secs_f64() * 1e3;
    Ok(Row {
        private_kib: Some(private_kib),
        pss_kib: Some(pss_kib),
        up_ms: Some(up_ms),
        restart_ms: Some(restart_ms),
        idle_switches: Some(idle_switches as f64),
        idle_cpu_ms: Some(idle_cpu_ms),
        stop_ms: Some(stop_ms),
    })
}

/// Writes the 20 services in the candidate's format; the command to start it.
fn setup(c: &Candidate, dir: &Path, port: u16) -> Result<Command> {
    let me = std::env::current_exe()?;
    let server = format!("{} bench supervise --helper serve {port}", me.display());
    let mut services: Vec<(String, String)> = (0..SLEEPERS)
        .map(|i| (format!("sleep{i:02}"), "sleep 100000".to_string()))
        .collect();
    services.push(("server".into(), server));
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(&c.path)
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match c.kind {
        Kind::Ours => {
            let defs = dir.join("services");
            std::fs::create_dir_all(&defs)?;
            for (name, command) in &services {
                let argv: Vec<String> = command.split(' ').map(|a| format!("{a:?}")).collect();
                std::fs::write(
                    defs.join(format!("{name}.toml")),
                    format!("command = [{}]\n", argv.join(", ")),
                )?;
            }
            cmd.arg("--services")
                .arg(&defs)
                .env("CRADLE_CTL_SOCKET", dir.join("ctl.sock"));
        }
        Kind::S6 => {
            for (name, command) in &services {
                let svc = dir.join(name);
                std::fs::create_dir_all(&svc)?;
                let run = svc.join("run");
                std::fs::write(&run, format!("#!/bin/sh\nexec {command}\n"))?;
                std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755))?;
            }
            cmd.arg(dir);
        }
        Kind::Supervisord => {
            let mut conf = format!(
                "[supervisord]\nnodaemon=true\nlogfile=/dev/null\nlogfile_maxbytes=0\n\
                 pidfile={}/supervisord.pid\n",
                dir.display()
            );
            for (name, command) in &services {
                conf.push_str(&format!(
                    "[program:{name}]\ncommand={command}\nautorestart=true\nstartsecs=0\n\
                     stdout_logfile=/dev/null\nstderr_logfile=/dev/null\n"
                ));
            }
            let path = dir.join("supervisord.conf");
            std::fs::write(&path, conf)?;
            cmd.args(["-n", "-c"]).arg(path);
        }
    }
    Ok(cmd)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The supervisor's pid (in our namespace): the child `unshare` forked.
fn init_pid(unshare: &Child) -> Result<i32> {
    let me = unshare.id();
    let mut pid = None;
    wait_until("unshare's child", || {
        let children =
            std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")).unwrap_or_default();
        pid = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok());
        pid.is_some()
    })?;
    pid.context("no init")
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + LIMIT;
    while !done() {
        if Instant::now() > deadline {
            bail!("{what}: not within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

/// Every process below `root`, with `root`, and their names: walked by
/// the kernel's `children` lists rather than a scan of all of /proc, so
/// that polling it to time a restart costs little next to the restart.
fn tree(root: i32) -> Vec<(i32, String)> {
    let mut found = vec![root];
    let mut at = 0;
    while at < found.len() {
        let pid = found[at];
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten();
        for task in tasks {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            found.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<i32>().ok()),
            );
        }
        at += 1;
    }
    found
        .into_iter()
        .map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            (pid, comm.trim_end().to_string())
        })
        .collect()
}

fn sleepers(root: i32) -> Vec<i32> {
    tree(root)
        .into_iter()
        .filter(|p| p.1 == "sleep")
        .map(|p| p.0)
        .collect()
}

/// The supervisor's own processes: PID 1, and for s6 every s6-supervise.
fn supervisor_pids(c: &Candidate, pid1: i32) -> Vec<i32> {
    let mut pids = vec![pid1];
    if c.kind == Kind::S6 {
        pids.extend(
            tree(pid1)
                .into_iter()
                .filter(|p| p.1 == "s6-supervise")
                .map(|p| p.0),
        );
    }
    pids
}

/// Private (clean + dirty) and proportional set size, summed, in KiB.
fn memory(pids: &[i32]) -> (f64, f64) {
    let (mut private, mut pss) = (0.0, 0.0);
    for pid in pids {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        for line in text.lines() {
            let value = |l: &str| -> f64 {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0.0)
            };
            if line.starts_with("Private_Clean:") || line.starts_with("Private_Dirty:") {
                private += value(line);
            } else if line.starts_with("Pss:") {
                pss += value(line);
            }
        }
    }
    (private, pss)
}

/// Voluntary and involuntary context switches, summed over every thread.
fn switches(pids: &[i32]) -> u64 {
    let mut total = 0;
    for pid in pids {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten();
        for task in tasks {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            total += status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    total
}

/// CPU time (user and system) the processes have used, in ms, from the
/// clock ticks in /proc/PID/stat.
fn cpu_ms(pids: &[i32]) -> f64 {
    // SAFETY: sysconf has no pointers.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut ticks = 0u64;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis; utime and stime
        // are the 14th and 15th of the whole line.
        if let Some((_, rest)) = stat.rsplit_once(')') {
            ticks += rest
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|f| f.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    ticks as f64 * 1e3 / hz
}

type Metric = (&'static str, fn(&Row) -> Option<f64>, usize);

fn print_table(candidates: &[Candidate], rows: &[Row]) {
    let metrics: [Metric; 7] = [
        (
            "private memory of the supervisor processes (KiB)",
            |r| r.private_kib,
            0,
        ),
        ("PSS of the supervisor processes (KiB)", |r| r.pss_kib, 0),
        (
            "start until all 20 up and the server accepts (ms)",
            |r| r.up_ms,
            1,
        ),
        (
            "restart after SIGKILL of a service (ms)",
            |r| r.restart_ms,
            2,
        ),
        ("context switches over 60 s idle", |r| r.idle_switches, 0),
        ("CPU over 60 s idle (ms)", |r| r.idle_cpu_ms, 0),
        ("SIGTERM until all gone (ms)", |r| r.stop_ms, 1),
    ];
    let width = 14;
    print!("{:<52}", "");
    for c in candidates {
        print!("{:>width$}", c.name);
    }
    println!();
    for (label, get, decimals) in metrics {
        print!("{label:<52}");
        for row in rows {
            match get(row) {
                Some(v) => print!("{v:>width$.decimals$}"),
                None => print!("{:>width$}", "n/a"),
            }
        }
        println!();
        if let Some(ours) = get(&rows[0]) {
            print!("{:<52}", "  ratio to cradle-init");
            for row in rows {
                match get(row) {
                    Some(v) if ours > 0.0 => print!("{:>width$.2}", v / ours),
                    _ => print!("{:>width$}", "n/a"),
                }
            }
            println!();
        }
    }
}

/// `serve PORT`: accepts connections on 127.0.0.1:PORT and closes them.
fn helper(args: &[String]) -> Result<()> {
    match args {
        [what, port] if what == "serve" => {
            let listener = std::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>()?))?;
            for conn in listener.incoming() {
                drop(conn);
            }
            Ok(())
        }
        _ => bail!("usage: xtask bench supervise --helper serve PORT"),
    }
}
