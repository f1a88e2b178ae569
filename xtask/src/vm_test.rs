//! `cargo xtask vm-test`: the launcher's end-to-end checks on a cgroup v2
//! host, which this machine (cgroup v1) is not. Boots Debian's cloud kernel
//! in QEMU with `cgroup_no_v1=all` and an initramfs holding busybox, the
//! launcher, the probe and the default image; cradle-init is the guest's
//! PID 1 and runs `xtask/vm/run-checks.sh`, which lays the cgroup tree out
//! as systemd does and prints `PASS name` or `FAIL name: detail` per
//! check. Fails when a check fails that is not in [`KNOWN_FAILURES`].
//!
//! The kernel package and its unpacked files stay under `<target>/vm/`;
//! the guest's console of the last run is `<target>/vm/console.log`.
//!
//! `--bench` runs, instead of the checks, `bench run`'s warm start in the
//! guest: the static and the glibc release launcher and crun, interleaved,
//! and prints each median's ratio to crun's.

mod cpio;
mod initramfs;
mod kernel;
mod modules;
mod qemu;
mod report;

use crate::util::{cargo, run_cmd, target_dir};
use anyhow::{Context, Result, bail};
use report::Verdict;
use std::time::{Duration, Instant};

/// Checks that fail until other work lands, with the reason. Remove a name
/// when its fix lands (the run says so when a listed check passes).
pub const KNOWN_FAILURES: &[(&str, &str)] = &[
    // None left: network-host (EBUSY mounting cgroup2 over the host's),
    // cgroup-parent-relative (EBUSY enabling controllers in the launcher's
    // own cgroup), rootless-default-parent (EACCES on /cradle) and devices
    // (no v2 device program) were fixed while this task was written.
];

/// The guest's script, run by cradle-init as PID 1.
const SCRIPT: &str = include_str!("../vm/run-checks.sh");

/// `rdinit=/init` is cradle-init; what follows `--` is its command line.
const CMDLINE: &str =
    "console=ttyS0 panic=-1 cgroup_no_v1=all rdinit=/init -- /bin/sh /run-checks.sh";

/// The whole guest run, boot included: 20 s here on 2 idle cores, 75 s
/// while they build; TCG is slow.
const TIMEOUT: Duration = Duration::from_secs(270);

pub fn run(args: &[String]) -> Result<()> {
    let bench = match args {
        [] => false,
        [flag] if flag == "--bench" => true,
        _ => bail!("usage: cargo xtask vm-test [--bench]"),
    };
    let vm_dir = target_dir().join("vm");
    let artifacts = build_artifacts(bench)?;
    let kernel = kernel::fetch(&vm_dir).context("fetching the guest's kernel")?;
    let initramfs = vm_dir.join("initramfs.cpio");
    if let Err(err) = initramfs::assemble(&initramfs, &kernel, &artifacts, SCRIPT) {
        let _ = std::fs::remove_file(&initramfs);
        return Err(err.context("assembling the guest's initramfs"));
    }
    let started = Instant::now();
    let cmdline = if bench {
        format!("{CMDLINE} bench")
    } else {
        CMDLINE.to_string()
    };
    let boot = qemu::Boot {
        kernel: &kernel.vmlinuz,
        initramfs: &initramfs,
        cmdline: &cmdline,
        timeout: TIMEOUT,
    };
    eprintln!("xtask: booting kernel {} in QEMU", kernel.release);
    let mut verdicts = Vec::new();
    let mut timings = Vec::new();
    let console = qemu::run(&boot, &vm_dir.join("console.log"), &mut |line| {
        if let Some(v) = Verdict::of_line(line, KNOWN_FAILURES) {
            println!("{v}");
            verdicts.push(v);
        }
        if let Some(rest) = line.strip_prefix("BENCH ") {
            timings.push(rest.trim().to_string());
        }
    });
    let _ = std::fs::remove_file(&initramfs);
    let judged = judge(&console?, &verdicts, started.elapsed(), &vm_dir);
    if bench {
        print_bench(&timings);
    }
    judged
}

/// The guest's `BENCH name median_us runs` lines as a table, each median's
/// ratio to crun's. TCG emulates the CPU: the times are many times this
/// machine's, the ratios are what to read.
fn print_bench(lines: &[String]) {
    let rows: Vec<(String, f64, String)> = lines
        .iter()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next()?.to_string();
            let us: f64 = parts.next()?.parse().ok()?;
            Some((name, us / 1000.0, parts.next().unwrap_or("?").to_string()))
        })
        .collect();
    let crun = rows.iter().find(|(n, _, _)| n == "crun").map(|r| r.1);
    println!("vm bench: warm start of /bin/true in the cgroup v2 guest (TCG), medians");
    for (name, ms, runs) in &rows {
        let label = match name.as_str() {
            "static" => "cradle launcher (static)",
            "glibc" => "cradle launcher (glibc)",
            "crun" => "crun run",
            other => other,
        };
        let ratio = crun.map_or("-".into(), |c| format!("{:.2}x", ms / c));
        println!("{label:<28} {ms:>9.1} ms {ratio:>8} vs crun ({runs} runs)");
    }
}

/// The static init, the probe, the default image and the launcher, as
/// `cargo xtask test` builds them.
fn build_artifacts(bench: bool) -> Result<initramfs::Artifacts> {
    let init = crate::build_init::build().context("building the static init")?;
    let probe = crate::build_probe::run(&[]).context("building the probe")?;
    let image = crate::build_image::run(&[]).context("building the default image")?;
    run_cmd(cargo().args(["build", "--package", "launcher"])).context("building the launcher")?;
    let bench = match bench {
        false => None,
        true => {
            let static_launcher =
                crate::build_launcher::build().context("building the static launcher")?;
            run_cmd(cargo().args(["build", "--release", "--package", "launcher"]))
                .context("building the release launcher")?;
            Some(initramfs::BenchPrograms {
                static_launcher,
                glibc_launcher: target_dir().join("release").join("launcher"),
            })
        }
    };
    Ok(initramfs::Artifacts {
        init,
        launcher: target_dir().join("debug").join("launcher"),
        probe,
        image,
        bench,
    })
}

/// Fails when the guest did not get to the end of the script, or a check
/// not known to fail failed.
fn judge(
    console: &str,
    verdicts: &[Verdict],
    took: Duration,
    vm_dir: &std::path::Path,
) -> Result<()> {
    let log = vm_dir.join("console.log");
    if !report::finished(console) {
        bail!(
            "the guest stopped before its last check (no `{}` line); its console is in `{}`, ending with:\n{}",
            report::DONE,
            log.display(),
            qemu::tail(console, 15)
        );
    }
    let failed: Vec<&Verdict> = verdicts.iter().filter(|v| v.failed()).collect();
    let known = verdicts
        .iter()
        .filter(|v| matches!(v, Verdict::Known { .. }))
        .count();
    eprintln!(
        "xtask: vm-test: {} checks, {} failed, {known} known to fail, in {:.0?} (console: {})",
        verdicts.len(),
        failed.len(),
        took,
        log.display()
    );
    if !failed.is_empty() {
        let names: Vec<String> = failed
            .iter()
            .map(|v| match v {
                Verdict::Fail { name, .. } => name.clone(),
                other => other.to_string(),
            })
            .collect();
        bail!("checks failed in the cgroup v2 guest: {}", names.join(", "));
    }
    Ok(())
}
