//! The commands on detached containers, found by name, id or id prefix:
//! `ps`, `stop`, `kill`, `wait`, `rm`, `inspect`, `logs` (`exec` is in
//! [`crate::enter`]). Each first brings the record up to date
//! ([`state::settle`]): a container whose monitor was killed is reported as
//! exited (137) and what it left is reclaimed, whichever command comes next.

use crate::cache::{self, Cache};
use crate::state::{self, Handle, Record, Status};
use crate::{Error, Result};
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// How long `stop` and `rm -f` wait for the monitor to finish after the
/// SIGKILL before they kill the monitor itself.
const AFTER_KILL: Duration = Duration::from_secs(10);

pub fn open_cache() -> Result<Cache> {
    Cache::open(cache::default_root())
}

/// `launcher ps [-a] [-q]`: docker's table (or only the short ids), the
/// running (and restarting) containers, or all of them, newest first.
pub fn ps(cache: &Cache, all: bool, quiet: bool) -> Result<String> {
    let mut records: Vec<Record> = state::list(cache)?
        .iter()
        .filter_map(|h| state::settle(cache, h).ok())
        .filter(|r| all || matches!(r.state.status, Status::Running | Status::Restarting))
        .collect();
    records.sort_by_key(|r| std::cmp::Reverse(r.created));
    if quiet {
        return Ok(records
            .iter()
            .map(|r| format!("{}\n", &r.id[..12.min(r.id.len())]))
            .collect());
    }
    let now = state::now();
    let mut rows = vec![[
        "CONTAINER ID".to_string(),
        "IMAGE".into(),
        "COMMAND".into(),
        "CREATED".into(),
        "STATUS".into(),
        "PORTS".into(),
        "NAMES".into(),
    ]];
    for r in &records {
        rows.push([
            r.id[..12.min(r.id.len())].to_string(),
            r.config.image.clone(),
            quoted_command(&r.config.command),
            format!(
                "{} ago",
                state::human_duration(now.saturating_sub(r.created))
            ),
            status_text(r, now),
            ports_text(&r.config.ports),
            r.name.clone(),
        ]);
    }
    Ok(table(&rows))
}

/// `Up 3 seconds`, `Exited (1) 2 seconds ago`, with the restarts when
/// there were some.
pub fn status_text(r: &Record, now: u64) -> String {
    let s = &r.state;
    let ago = |t: u64| state::human_duration(now.saturating_sub(t));
    let text = match s.status {
        Status::Created => "Created".to_string(),
        Status::Running => format!(
            "Up {}{}",
            ago(s.started_at),
            s.health.as_ref().map_or("", |h| h.status.ps_suffix())
        ),
        Status::Restarting => format!("Restarting ({}) {} ago", s.exit_code, ago(s.finished_at)),
        Status::Exited => format!("Exited ({}) {} ago", s.exit_code, ago(s.finished_at)),
    };
    match s.restart_count {
        0 => text,
        1 => format!("{text} (restarted 1 time)"),
        n => format!("{text} (restarted {n} times)"),
    }
}

/// `State.Health` as docker's inspect shows it.
fn health_json(h: &crate::health::Health) -> serde_json::Value {
    let log: Vec<_> = h
        .log
        .iter()
        .map(|e| {
            serde_json::json!({
                "Start": state::rfc3339(e.start),
                "End": state::rfc3339(e.end),
                "ExitCode": e.exit_code,
                "Output": e.output,
            })
        })
        .collect();
    serde_json::json!({
        "Status": h.status.as_str(),
        "FailingStreak": h.failing_streak,
        "Log": log,
    })
}

/// `"sh -c 'while…"`: docker's quoted command, cut at 20 characters.
fn quoted_command(argv: &[String]) -> String {
    let full = argv.join(" ");
    let cut: String = full.chars().take(20).collect();
    match cut.len() < full.len() {
        true => format!("\"{cut}…\""),
        false => format!("\"{full}\""),
    }
}

/// `-p` specs as docker lists them: `0.0.0.0:8080->80/tcp`.
fn ports_text(specs: &[String]) -> String {
    specs
        .iter()
        .map(|spec| {
            let (addr, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
            let parts: Vec<&str> = addr.rsplitn(3, ':').collect();
            match parts[..] {
                [ctr, host] => format!("0.0.0.0:{host}->{ctr}/{proto}"),
                [ctr, host, ip] => format!("{ip}:{host}->{ctr}/{proto}"),
                _ => spec.clone(),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Columns padded to their widest cell, three spaces apart, as docker's.
fn table(rows: &[[String; 7]]) -> String {
    let mut widths = [0; 7];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line += cell;
            if i + 1 < row.len() {
                let pad = widths[i] - cell.chars().count() + 3;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out += line.trim_end();
        out.push('\n');
    }
    out
}

/// `launcher stop [-t SECS] NAME`: the image's StopSignal (SIGTERM without
/// one), then SIGKILL after `timeout`; returns once the container is done
/// (no restart follows a stop). A stopped container is left as it is.
pub fn stop(cache: &Cache, what: &str, timeout: Duration) -> Result<()> {
    let handle = state::resolve(cache, what)?;
    state::settle(cache, &handle)?;
    if !state::monitor_alive(&handle.dir) {
        return Ok(());
    }
    handle.mark_stopped()?;
    let record = handle.record()?;
    let signal = match record.state.process.stop_signal {
        0 => libc::SIGTERM,
        s => s,
    };
    if signal_until_done(&handle, signal, timeout) {
        return Ok(());
    }
    finish(cache, &handle)
}

/// `launcher kill [-s SIG] NAME`: `signal` to the container's first
/// process. As docker, the container counts as stopped by the user: its
/// restart policy does not start it again.
pub fn kill(cache: &Cache, what: &str, signal: i32) -> Result<()> {
    let handle = state::resolve(cache, what)?;
    let record = state::settle(cache, &handle)?;
    let not_running = || Error::NotRunning {
        name: record.name.clone(),
    };
    if !state::monitor_alive(&handle.dir) || record.state.status != Status::Running {
        return Err(not_running());
    }
    handle.mark_stopped()?;
    match state::kill_if_same(record.state.pid, record.state.pid_start, signal) {
        true => Ok(()),
        false => Err(not_running()),
    }
}

/// `launcher wait NAME`: blocks until the container is done (its monitor
/// ended: exited with no restart left, or stopped), and returns its exit
/// status.
pub fn wait(cache: &Cache, what: &str) -> Result<i32> {
    let handle = state::resolve(cache, what)?;
    let path = handle.dir.join(state::MONITOR_LOCK);
    let mut lock = File::open(&path).map_err(Error::io("opening", &path))?;
    loop {
        // SAFETY: flock on an fd we own; blocks until the monitor is gone.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_SH) } == 0 {
            break;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Err(Error::io("waiting on", &path)(
                std::io::Error::last_os_error(),
            ));
        }
    }
    let mut text = String::new();
    let _ = lock.read_to_string(&mut text);
    drop(lock);
    if let Some(code) = state::exit_in_lock(&text) {
        return Ok(code);
    }
    // The monitor died before it could say: the record says what happened.
    Ok(state::settle(cache, &handle)?.state.exit_code)
}

/// `launcher rm [-f] NAME`: removes a container that is done (its record,
/// log, and anything it left), or with `force` kills it first. A container
/// kept by a foreground `run --keep --name NAME` is removed too.
pub fn rm(cache: &Cache, what: &str, force: bool) -> Result<()> {
    let handle = match state::resolve(cache, what) {
        Ok(handle) => handle,
        Err(Error::NoSuchContainer { name }) => {
            return match cache.kept_container(&name) {
                Some(dir) => cache.remove_kept(&dir),
                None => Err(Error::NoSuchContainer { name }),
            };
        }
        Err(e) => return Err(e),
    };
    state::settle(cache, &handle)?;
    if state::monitor_alive(&handle.dir) {
        if !force {
            return Err(Error::ContainerRunning { id: handle.id });
        }
        handle.mark_stopped()?;
        if !signal_until_done(&handle, libc::SIGKILL, AFTER_KILL) {
            finish(cache, &handle)?;
        }
    }
    if !handle.dir.exists() {
        // Removed meanwhile: by its monitor (`--rm`), or another `rm`.
        return Ok(());
    }
    // Reclaims what a killed monitor left, then the directory goes (and
    // the writable layer of `-d --keep`).
    state::settle(cache, &handle)?;
    cache::remove_container_dir(&handle.dir).map_err(Error::io("removing", &handle.dir))?;
    if let Some(kept) = cache.kept_container(&handle.id) {
        cache.remove_kept(&kept)?;
    }
    cache.reclaim_stale();
    Ok(())
}

/// Sends `signal` to the container's first process (once it has one) and
/// waits up to `timeout` for its monitor to end; true when it did.
fn signal_until_done(handle: &Handle, signal: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut sent_to = None;
    loop {
        if !state::monitor_alive(&handle.dir) {
            return true;
        }
        // The pid changes with each restart, and is 0 while starting: the
        // signal goes to each process that is the container's first.
        if let Ok(r) = handle.record()
            && r.state.pid > 0
            && sent_to != Some((r.state.pid, r.state.pid_start))
            && state::kill_if_same(r.state.pid, r.state.pid_start, signal)
        {
            sent_to = Some((r.state.pid, r.state.pid_start));
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// After the grace period: SIGKILL to the container, then, if its monitor
/// is still there, to the monitor (and so to its runner and container).
fn finish(cache: &Cache, handle: &Handle) -> Result<()> {
    if signal_until_done(handle, libc::SIGKILL, AFTER_KILL) {
        return Ok(());
    }
    let record = handle.record()?;
    state::kill_if_same(record.monitor.pid, record.monitor.start, libc::SIGKILL);
    if signal_until_done(handle, libc::SIGKILL, AFTER_KILL) {
        state::settle(cache, handle)?;
        return Ok(());
    }
    Err(Error::sys(format!("stopping container {}", handle.id))(
        nix::errno::Errno::ETIMEDOUT,
    ))
}

/// `launcher inspect NAME`: docker's fields, as one JSON object.
pub fn inspect(cache: &Cache, what: &str) -> Result<serde_json::Value> {
    let handle = state::resolve(cache, what)?;
    let r = state::settle(cache, &handle)?;
    let s = &r.state;
    let c = &r.config;
    let signal_name = nix::sys::signal::Signal::try_from(match s.process.stop_signal {
        0 => libc::SIGTERM,
        n => n,
    })
    .map(|s| s.as_str().to_string())
    .unwrap_or_default();
    Ok(serde_json::json!({
        "Id": r.id,
        "Name": format!("/{}", r.name),
        "Created": state::rfc3339(r.created),
        "Path": c.command.first().cloned().unwrap_or_default(),
        "Args": c.command.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": s.status.as_str(),
            "Running": s.status == Status::Running,
            "Paused": false,
            "Restarting": s.status == Status::Restarting,
            "OOMKilled": s.oom_killed,
            "Dead": false,
            "Pid": if s.status == Status::Running { s.pid } else { 0 },
            "ExitCode": s.exit_code,
            "Error": s.error,
            "StartedAt": state::rfc3339(s.started_at),
            "FinishedAt": state::rfc3339(s.finished_at),
            "Health": s.health.as_ref().map(health_json),
        },
        "Image": c.image,
        "RestartCount": s.restart_count,
        "LogPath": handle.dir.join(crate::logs::LOG),
        "HostConfig": {
            "RestartPolicy": {
                "Name": c.restart.name(),
                "MaximumRetryCount": match c.restart {
                    state::Restart::OnFailure { max } => max,
                    _ => 0,
                },
            },
            "AutoRemove": c.auto_remove,
            "NetworkMode": c.network,
            "Binds": c.volumes,
            "PortBindings": c.ports,
            "CgroupParent": c.cgroup_parent.clone().unwrap_or_default(),
            "Privileged": c.privileges.privileged,
            "CapAdd": c.privileges.cap_add,
            "CapDrop": c.privileges.cap_drop,
            "SecurityOpt": c.privileges.security_opt,
            "GroupAdd": c.privileges.group_add,
        },
        "Config": {
            "Hostname": c.hostname,
            "User": s.process.user.clone().or(c.user.clone()).unwrap_or_default(),
            "Env": if s.process.env.is_empty() { c.env.clone() } else { s.process.env.clone() },
            "Cmd": c.command,
            "Image": c.image,
            "WorkingDir": s.process.cwd.clone().or(c.workdir.clone()).unwrap_or_default(),
            "Entrypoint": c.entrypoint,
            "Tty": c.tty,
            "StopSignal": signal_name,
            "Labels": c.labels,
            "Healthcheck": c.healthcheck.as_ref().map(|h| serde_json::json!({
                "Test": std::iter::once("CMD".to_string()).chain(h.test.clone()).collect::<Vec<_>>(),
                "Interval": h.interval.as_nanos() as u64,
                "Timeout": h.timeout.as_nanos() as u64,
                "StartPeriod": h.start_period.as_nanos() as u64,
                "Retries": h.retries,
            })),
        },
    }))
}

/// `launcher logs [-f] [--tail N] NAME`.
pub fn logs(
    cache: &Cache,
    what: &str,
    follow: bool,
    tail: Option<usize>,
    output: &mut crate::logs::Output<'_>,
) -> Result<()> {
    let handle = state::resolve(cache, what)?;
    let dir = handle.dir.clone();
    crate::logs::show(
        &handle.dir,
        tail,
        follow,
        &|| !state::monitor_alive(&dir),
        output,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_prints_dockers_columns() {
        assert_eq!(
            quoted_command(&["sleep".into(), "100".into()]),
            "\"sleep 100\""
        );
        assert_eq!(
            quoted_command(&["sh".into(), "-c".into(), "while true; do date; done".into()]),
            "\"sh -c while true; do…\""
        );
        assert_eq!(
            ports_text(&["8080:80".into(), "127.0.0.1:53:53/udp".into()]),
            "0.0.0.0:8080->80/tcp, 127.0.0.1:53->53/udp"
        );
        let mut r = Record::new("a".repeat(64), "web".into(), state::Config::default());
        let s = 1_000_000_000;
        r.state.status = Status::Exited;
        r.state.exit_code = 1;
        r.state.finished_at = 10 * s;
        r.state.restart_count = 3;
        assert_eq!(
            status_text(&r, 12 * s),
            "Exited (1) 2 seconds ago (restarted 3 times)"
        );
        r.state.status = Status::Running;
        r.state.started_at = 9 * s;
        r.state.restart_count = 0;
        assert_eq!(status_text(&r, 12 * s), "Up 3 seconds");
        let t = table(&[
            std::array::from_fn(|i| ["ID", "IMAGE", "C", "CR", "ST", "", "N"][i].to_string()),
            std::array::from_fn(|i| ["abc", "i", "\"x\"", "now", "Up", "", "web"][i].to_string()),
        ]);
        assert_eq!(
            t,
            "ID    IMAGE   C     CR    ST      N\nabc   i       \"x\"   now   Up      web\n"
        );
    }
}
