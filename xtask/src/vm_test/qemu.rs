//! Booting the guest: QEMU with TCG (this machine's /dev/kvm does not boot
//! a guest), the serial console on stdout, copied line by line to a log
//! file and to the caller, and killed at a deadline.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The guest: what to boot and how long it may take.
pub struct Boot<'a> {
    pub kernel: &'a Path,
    pub initramfs: &'a Path,
    pub cmdline: &'a str,
    pub timeout: Duration,
}

/// Runs the guest until it powers off; returns its console output (also
/// written to `log`), each line passed to `on_line` as it arrives. Fails
/// when QEMU fails, or when the guest is still running at the deadline
/// (QEMU is killed then).
pub fn run(boot: &Boot, log: &Path, on_line: &mut dyn FnMut(&str)) -> Result<String> {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
        "-m",
        "2048",
        "-smp",
        "2",
    ])
    .args(["-nographic", "-no-reboot", "-nic", "none"])
    .arg("-kernel")
    .arg(boot.kernel)
    .arg("-initrd")
    .arg(boot.initramfs)
    .args(["-append", boot.cmdline])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {cmd:?} (Debian: apt-get install qemu-system-x86)"))?;
    let mut file =
        std::fs::File::create(log).with_context(|| format!("creating `{}`", log.display()))?;
    let stdout = child.stdout.take().context("QEMU's stdout")?;
    let mut stderr = child.stderr.take().context("QEMU's stderr")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            let text = String::from_utf8_lossy(&line)
                .trim_end_matches('\r')
                .to_string();
            if tx.send(text).is_err() {
                break;
            }
        }
    });
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + boot.timeout;
    let mut console = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                writeln!(file, "{line}").with_context(|| format!("writing `{}`", log.display()))?;
                on_line(&line);
                console.push_str(&line);
                console.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "the guest did not finish within {:?}: QEMU killed; its console is in `{}`, ending with:\n{}",
                    boot.timeout,
                    log.display(),
                    tail(&console, 15)
                );
            }
        }
    }
    let status = child.wait().context("waiting for QEMU")?;
    let errors = errors.join().unwrap_or_default();
    if !status.success() {
        bail!("{cmd:?} failed: {status}: {}", errors.trim());
    }
    Ok(console)
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
