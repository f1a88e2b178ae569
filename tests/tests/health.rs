//! End to end: health checks of detached containers (`--health-cmd` and
//! the image's `Healthcheck`), as `ps` and `inspect` show them, and
//! attacked: checks that flood, hang, fork daemons, outlive their
//! container or their monitor, or come too often.

mod common;

use common::{eventually, stderr, stdout};

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A private state root whose detached containers go when the test ends.
type Hc = common::Detached;

impl Hc {
    fn health(&self, name: &str) -> serde_json::Value {
        self.inspect(name)["State"]["Health"].clone()
    }

    /// The `ps` row of `name`.
    fn ps_row(&self, name: &str) -> String {
        let out = self.run(&["ps"]);
        assert!(out.status.success(), "{out:?}");
        stdout(&out)
            .lines()
            .find(|l| l.ends_with(name))
            .unwrap_or_default()
            .to_string()
    }

    /// The monitor's pid, from the container's record.
    fn monitor_pid(&self, id: &str) -> i32 {
        let dir = self.kit.root.path().join("detached").join(id);
        let record = std::fs::read(dir.join("record.json")).expect("the record");
        let record: serde_json::Value = serde_json::from_slice(&record).unwrap();
        record["monitor"]["pid"].as_i64().unwrap() as i32
    }

    /// A busybox image with the init in front; `healthcheck` is put in its
    /// config as docker writes one.
    fn busybox_image(&self, name: &str, healthcheck: Option<serde_json::Value>) -> Option<PathBuf> {
        let busybox = testkit::require_tool("busybox")?;
        let init = common::init()?;
        let out = self.kit.root.path().join(format!("{name}.tar"));
        let mut top = common::Layer::default();
        top.file("sbin/cradle-init", &std::fs::read(init).ok()?, 0o755);
        let mut config = serde_json::json!({
            "Entrypoint": ["/sbin/cradle-init", "--"],
            "Cmd": ["sleep", "1000"],
            "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
        });
        if let Some(hc) = healthcheck {
            config["Healthcheck"] = hc;
        }
        common::write_image_with(&out, &[common::busybox_layer(&busybox), top], config);
        Some(out)
    }
}

/// Host processes whose command line is exactly `argv` (a marker such as
/// `sleep 7771` that no other test runs).
fn processes(argv: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

fn log_codes(health: &serde_json::Value) -> Vec<i64> {
    health["Log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ExitCode"].as_i64().unwrap())
        .collect()
}

#[test]
fn a_passing_check_runs_inside_the_container_and_makes_it_healthy() {
    let Some(hc) = Hc::new() else { return };
    let Some(image) = hc.busybox_image("plain", None) else {
        return;
    };
    // The first check comes one interval after the start: until then the
    // container is starting.
    let id = hc.detach(
        &[
            "--name",
            "ok",
            "--health-cmd",
            "hostname; grep CapEff /proc/self/status; readlink /proc/1/exe",
            "--health-interval",
            "1500ms",
        ],
        &image,
        &["sleep", "1000"],
    );
    let row = hc.ps_row("ok");
    assert!(
        row.contains("Up ") && row.contains("(health: starting)"),
        "{row}"
    );
    assert_eq!(hc.health("ok")["Status"], "starting");
    eventually(20, "healthy", || hc.health("ok")["Status"] == "healthy");
    let row = hc.ps_row("ok");
    assert!(row.contains("(healthy)"), "{row}");
    let health = hc.health("ok");
    assert_eq!(health["FailingStreak"], 0);
    let entry = &health["Log"][0];
    assert_eq!(entry["ExitCode"], 0);
    assert!(entry["Start"].as_str().unwrap() <= entry["End"].as_str().unwrap());
    // Entered as `exec` enters: the container's hostname, docker's
    // capabilities, its PID namespace (PID 1 is the container's init).
    let output = entry["Output"].as_str().unwrap();
    assert!(output.starts_with(&format!("{}\n", &id[..12])), "{output}");
    assert!(output.contains("CapEff:\t00000000a80425fb"), "{output}");
    assert!(output.contains("cradle-init"), "{output}");
    let config = &hc.inspect("ok")["Config"]["Healthcheck"];
    assert_eq!(config["Interval"], 1_500_000_000u64);
    assert_eq!(config["Retries"], 3);
}

#[test]
fn failures_in_a_row_make_it_unhealthy_and_a_success_resets_the_streak() {
    let Some(hc) = Hc::new() else { return };
    let Some(image) = hc.busybox_image("plain", None) else {
        return;
    };
    let fast = ["--health-interval", "200ms", "--health-retries", "3"];
    // Fails twice, then passes: never unhealthy with 3 retries.
    let twice = "n=$(cat /tmp/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /tmp/n; \
                 echo try $n; [ $n -ge 3 ]";
    let mut args = vec!["--name", "flaky", "--health-cmd", twice];
    args.extend(fast);
    hc.detach(&args, &image, &["sleep", "1000"]);
    // Always fails.
    let mut args = vec!["--name", "bad", "--health-cmd", "echo bad; exit 3"];
    args.extend(fast);
    hc.detach(&args, &image, &["sleep", "1000"]);
    eventually(20, "the flaky one healthy", || {
        let h = hc.health("flaky");
        assert_ne!(h["Status"], "unhealthy", "{h}");
        h["Status"] == "healthy"
    });
    assert_eq!(log_codes(&hc.health("flaky"))[..3], [1, 1, 0]);
    eventually(20, "the failing one unhealthy", || {
        hc.health("bad")["Status"] == "unhealthy"
    });
    let health = hc.health("bad");
    assert!(health["FailingStreak"].as_u64().unwrap() >= 3, "{health}");
    assert_eq!(health["Log"][0]["ExitCode"], 3);
    assert_eq!(health["Log"][0]["Output"], "bad\n");
    let row = hc.ps_row("bad");
    assert!(row.contains("Up ") && row.contains("(unhealthy)"), "{row}");
    // Only the last five results are kept.
    eventually(20, "five results", || {
        hc.health("bad")["FailingStreak"].as_u64().unwrap() > 6
    });
    assert_eq!(hc.health("bad")["Log"].as_array().unwrap().len(), 5);
}

#[test]
fn failures_during_the_start_period_do_not_count() {
    let Some(hc) = Hc::new() else { return };
    let Some(image) = hc.busybox_image("plain", None) else {
        return;
    };
    let started = Instant::now();
    hc.detach(
        &[
            "--name",
            "slow",
            "--health-cmd",
            "exit 1",
            "--health-interval",
            "200ms",
            "--health-retries",
            "1",
            "--health-start-period",
            "3s",
        ],
        &image,
        &["sleep", "1000"],
    );
    // Several failures inside the start period, still starting.
    eventually(20, "two failures", || {
        hc.health("slow")["Log"].as_array().unwrap().len() >= 2
    });
    let health = hc.health("slow");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "too slow to tell"
    );
    assert_eq!(health["Status"], "starting", "{health}");
    assert_eq!(health["FailingStreak"], 0, "{health}");
    // Past it, one failure is enough.
    eventually(20, "unhealthy", || {
        hc.health("slow")["Status"] == "unhealthy"
    });
    assert!(started.elapsed() >= Duration::from_secs(3));
}

#[test]
fn the_image_healthcheck_runs_and_flags_override_it_field_by_field() {
    let Some(hc) = Hc::new() else { return };
    let shell = serde_json::json!({
        "Test": ["CMD-SHELL", "echo from-image; exit 0"],
        "Interval": 200_000_000u64,
        "Retries": 2,
    });
    let Some(image) = hc.busybox_image("shell", Some(shell)) else {
        return;
    };
    hc.detach(&["--name", "img"], &image, &[]);
    eventually(20, "healthy", || hc.health("img")["Status"] == "healthy");
    assert_eq!(hc.health("img")["Log"][0]["Output"], "from-image\n");
    // --health-cmd replaces the command and keeps the image's interval
    // and retries.
    hc.detach(
        &["--name", "over", "--health-cmd", "echo mine; exit 5"],
        &image,
        &[],
    );
    eventually(20, "unhealthy", || {
        hc.health("over")["Status"] == "unhealthy"
    });
    let health = hc.health("over");
    assert_eq!(health["Log"][0]["Output"], "mine\n");
    assert_eq!(
        health["FailingStreak"], 2,
        "after the image's 2 retries: {health}"
    );
    let config = &hc.inspect("over")["Config"]["Healthcheck"];
    assert_eq!(config["Interval"], 200_000_000u64);
    assert_eq!(config["Retries"], 2);
    // --no-healthcheck: no check at all.
    hc.detach(&["--name", "none", "--no-healthcheck"], &image, &[]);
    std::thread::sleep(Duration::from_millis(800));
    let state = hc.inspect("none");
    assert!(state["State"]["Health"].is_null(), "{state}");
    assert!(!hc.ps_row("none").contains("health"));
    // The exec form, CMD with an argv.
    let argv = serde_json::json!({
        "Test": ["CMD", "/bin/sh", "-c", "exit 4"],
        "Interval": 200_000_000u64,
        "Retries": 1,
    });
    let Some(image) = hc.busybox_image("argv", Some(argv)) else {
        return;
    };
    hc.detach(&["--name", "exec"], &image, &[]);
    eventually(20, "unhealthy", || {
        hc.health("exec")["Status"] == "unhealthy"
    });
    assert_eq!(hc.health("exec")["Log"][0]["ExitCode"], 4);
    // NONE in the image: none.
    let none = serde_json::json!({"Test": ["NONE"]});
    let Some(image) = hc.busybox_image("none", Some(none)) else {
        return;
    };
    hc.detach(&["--name", "nocheck"], &image, &[]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(hc.health("nocheck").is_null());
}

#[test]
fn an_unknown_image_healthcheck_is_reported_unhealthy_and_the_image_still_runs() {
    let Some(hc) = Hc::new() else { return };
    let bad = serde_json::json!({"Test": ["SOMETIMES", "x"]});
    let Some(image) = hc.busybox_image("bad", Some(bad)) else {
        return;
    };
    hc.detach(&["--name", "bad"], &image, &[]);
    let health = hc.health("bad");
    assert_eq!(health["Status"], "unhealthy", "{health}");
    let why = health["Log"][0]["Output"].as_str().unwrap();
    assert!(
        why.contains("Healthcheck") && why.contains("SOMETIMES"),
        "{why}"
    );
    assert!(hc.ps_row("bad").contains("(unhealthy)"));
    // --health-cmd replaces it; --no-healthcheck drops it.
    hc.detach(
        &[
            "--name",
            "mine",
            "--health-cmd",
            "true",
            "--health-interval",
            "200ms",
        ],
        &image,
        &[],
    );
    eventually(20, "healthy", || hc.health("mine")["Status"] == "healthy");
    hc.detach(&["--name", "none", "--no-healthcheck"], &image, &[]);
    assert!(hc.health("none").is_null());
    // In the foreground, the check is not run, and the image runs.
    let out = hc
        .cmd(&["run"])
        .arg(&image)
        .args(["echo", "ran"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "ran\n");
}

#[test]
fn a_hanging_check_is_killed_at_the_timeout_with_its_children() {
    let Some(hc) = Hc::new() else { return };
    let Some(image) = hc.busybox_image("plain", None) else {
        return;
    };
    // The first check hangs (with a child of its own); the next ones pass.
    let script = "[ -f /tmp/once ] && exit 0; touch /tmp/once; sleep 7771 & sleep 7772";
    hc.detach(
        &[
            "--name",
            "hang",
            "--health-cmd",
            script,
            "--health-interval",
            "200ms",
            "--health-timeout",
            "1s",
        ],
        &image,
        &["sleep", "1000"],
    );
    eventually(20, "the hanging check", || {
        !processes(&["sleep", "7772"]).is_empty()
    });
    let hung = Instant::now();
    eventually(20, "healthy", || hc.health("hang")["Status"] == "healthy");
    assert!(hung.elapsed() < Duration::from_secs(10));
    let first = &hc.health("hang")["Log"][0];
    assert_eq!(first["ExitCode"], -1, "{first}");
    assert!(
        first["Output"]
            .as_str()
            .unwrap()
            .contains("exceeded timeout"),
        "{first}"
    );
    // Killed, with the child it started.
    assert!(processes(&["sleep", "7771"]).is_empty());
    assert!(processes(&["sleep", "7772"]).is_empty());
}

#[test]
fn a_check_that_forks_a_daemon_ends_when_its_command_does() {
    let Some(hc) = Hc::new() else { return };
    let Some(image) = hc.busybox_image("plain", None) else {
        return;
    };
    // The daemon keeps the output pipe open; the check is over anyway.
    hc.detach(
        &[
            "--name",
            "daemon",
            "--health-cmd",
            "setsid sleep 7773 & echo forked",
            "--health-interval",
            "300ms",
        ],
        &image,
        &["sleep", "1000"],
    );
    eventually(20, "healthy", || hc.health("daemon")["Status"] == "healthy");
    let health = hc.health("daemon");
    assert_eq!(health["Log"][0]["Output"], "forked\n");
    eventually(20, "three checks", || {
        hc.health("daemon")["Log"].as_array().unwrap().len() >= 3
    });
    // The daemons live in the container, and go with it.
    assert!(!processes(&["sleep", "7773"]).is_empty());
    let out = hc.run(&["rm", "-f", "daemon"]);
    assert!(out.status.success(), "{out:?}");
    eventually(10, "the daemons gone", || {
        processes(&["sleep", "7773"]).is_empty()
    });
}

#[test]
fn a_check_printing_without_end_is_killed_at_its_timeout_and_the_monitor_works_on() {
    let Some(hc) = Hc::new() else { return };
    let Some(image) = hc.busybox_image("plain", None) else {
        return;
    };
    let id = hc.detach(
        &[
            "--name",
            "flood",
            "--health-cmd",
            "yes xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "--health-interval",
            "200ms",
            "--health-timeout",
            "3s",
        ],
        &image,
        &[
            "sh",
            "-c",
            "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.2; done",
        ],
    );
    eventually(30, "a timed-out flood", || {
        !hc.health("flood")["Log"].as_array().unwrap().is_empty()
    });
    let entry = hc.health("flood")["Log"][0].clone();
    assert_eq!(entry["ExitCode"], -1, "{entry}");
    assert!(
        entry["Output"]
            .as_str()
            .unwrap()
            .contains("exceeded timeout"),
        "{entry}"
    );
    // Meanwhile the log kept flowing, and the monitor stayed small.
    let before = stdout(&hc.run(&["logs", "flood"])).lines().count();
    std::thread::sleep(Duration::from_secs(1));
    let after = stdout(&hc.run(&["logs", "flood"])).lines().count();
    assert!(after > before, "the log stalled: {before} then {after}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", hc.monitor_pid(&id))).unwrap();
    let rss: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    assert!(rss < 64 << 10, "the monitor holds {rss} kB");
    // And it stops at once, check running or not.
    let started = Instant::now();
    let out = hc.run(&["stop", "-t", "1", "flood"]);
    assert!(out.status.success(), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_check_output_is_kept_to_its_first_4_kib() {
    let Some(hc) = Hc::new() else { return };
    let Some(image) = hc.busybox_image("plain", None) else {
        return;
    };
    hc.detach(
        &[
            "--name",
            "big",
            "--health-cmd",
            "head -c 50000000 /dev/zero | tr '\\0' x; echo; exit 2",
            "--health-interval",
            "200ms",
        ],
        &image,
        &["sleep", "1000"],
    );
    eventually(30, "a result", || {
        !hc.health("big")["Log"].as_array().unwrap().is_empty()
    });
    let entry = hc.health("big")["Log"][0].clone();
    assert_eq!(entry["ExitCode"], 2);
    assert_eq!(entry["Output"].as_str().unwrap(), "x".repeat(4096));
}

#[test]
fn a_container_ending_during_a_check_ends_it() {
    let Some(hc) = Hc::new() else { return };
    let Some(image) = hc.busybox_image("plain", None) else {
        return;
    };
    hc.detach(
        &[
            "--name",
            "short",
            "--health-cmd",
            "sleep 7774",
            "--health-interval",
            "100ms",
        ],
        &image,
        &["sleep", "2"],
    );
    eventually(20, "the check", || {
        !processes(&["sleep", "7774"]).is_empty()
    });
    let started = Instant::now();
    let out = hc.run(&["wait", "short"]);
    assert_eq!(stdout(&out).trim(), "0", "{out:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the check held the exit"
    );
    assert!(processes(&["sleep", "7774"]).is_empty());
    let all = stdout(&hc.run(&["ps", "-a"]));
    assert!(all.contains("Exited (0)"), "{all}");
}

#[test]
fn a_monitor_killed_during_a_check_leaves_nothing() {
    let Some(hc) = Hc::new() else { return };
    let Some(image) = hc.busybox_image("plain", None) else {
        return;
    };
    let id = hc.detach(
        &[
            "--name",
            "orphan",
            "--health-cmd",
            "sleep 7775",
            "--health-interval",
            "100ms",
        ],
        &image,
        &["sleep", "7776"],
    );
    eventually(20, "the check", || {
        !processes(&["sleep", "7775"]).is_empty()
    });
    let monitor = hc.monitor_pid(&id);
    // SAFETY: kill with integer arguments.
    assert_eq!(unsafe { libc::kill(monitor, libc::SIGKILL) }, 0);
    eventually(10, "the check and the container gone", || {
        processes(&["sleep", "7775"]).is_empty() && processes(&["sleep", "7776"]).is_empty()
    });
    let all = stdout(&hc.run(&["ps", "-a"]));
    assert!(all.contains("Exited"), "{all}");
    let out = hc.run(&["rm", "orphan"]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn a_1ms_interval_is_run_at_100ms_and_does_not_starve_the_monitor() {
    let Some(hc) = Hc::new() else { return };
    let Some(image) = hc.busybox_image("plain", None) else {
        return;
    };
    let out = hc
        .cmd(&[
            "run",
            "-d",
            "--name",
            "busy",
            "--health-cmd",
            "exit 1",
            "--health-retries",
            "100000",
            "--health-interval",
            "1ms",
        ])
        .arg(&image)
        .args(["sh", "-c", "while :; do echo tick; sleep 0.1; done"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(stderr(&out).contains("--health-interval"), "{out:?}");
    let started = Instant::now();
    eventually(20, "a first check", || {
        !hc.health("busy")["Log"].as_array().unwrap().is_empty()
    });
    std::thread::sleep(Duration::from_secs(2));
    let streak = hc.health("busy")["FailingStreak"].as_u64().unwrap();
    // At most one check per 100 ms, and some.
    let most = started.elapsed().as_millis() as u64 / 100 + 1;
    assert!(
        (3..=most).contains(&streak),
        "{streak} checks, at most {most}"
    );
    let before = stdout(&hc.run(&["logs", "busy"])).lines().count();
    std::thread::sleep(Duration::from_millis(600));
    assert!(stdout(&hc.run(&["logs", "busy"])).lines().count() > before);
    let started = Instant::now();
    let out = hc.run(&["stop", "-t", "1", "busy"]);
    assert!(out.status.success(), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_monitor_without_a_check_never_wakes_up() {
    let Some(hc) = Hc::new() else { return };
    let id = hc.detach(&["--name", "idle"], &hc.kit.image, &["sleep", "1000"]);
    let switches = || {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", hc.monitor_pid(&id))).unwrap();
        status
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    std::thread::sleep(Duration::from_millis(500));
    let before = switches();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(switches(), before);
}

#[test]
fn bad_health_flags_are_refused_naming_the_flag() {
    let Some(hc) = Hc::new() else { return };
    for (flag, value) in [
        ("--health-interval", "0s"),
        ("--health-interval", "-1s"),
        ("--health-interval", "10"),
        ("--health-timeout", "0"),
        ("--health-timeout", "-5ms"),
        ("--health-start-period", "-1s"),
        ("--health-retries", "0"),
        ("--health-retries", "-1"),
    ] {
        let out = hc
            .cmd(&["run", "-d", "--health-cmd", "true", flag, value])
            .arg(&hc.kit.image)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(125), "{flag} {value}: {out:?}");
        assert!(stderr(&out).contains(flag), "{flag} {value}: {out:?}");
    }
    // In the foreground, where nothing would show the health: refused.
    let out = hc
        .cmd(&["run", "--health-cmd", "true"])
        .arg(&hc.kit.image)
        .args(["true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(stderr(&out).contains("needs -d"), "{out:?}");
    let all = stdout(&hc.run(&["ps", "-a"]));
    assert_eq!(all.lines().count(), 1, "{all}");
}

#[test]
fn a_restart_starts_the_health_over() {
    let Some(hc) = Hc::new() else { return };
    let Some(image) = hc.busybox_image("plain", None) else {
        return;
    };
    // Healthy after its first check (at 2 s), then it fails at 3 s and is
    // restarted; the next check is 2 s after the restart.
    hc.detach(
        &[
            "--name",
            "again",
            "--restart",
            "on-failure:1",
            "--health-cmd",
            "echo fine",
            "--health-interval",
            "2s",
        ],
        &image,
        &["sh", "-c", "sleep 3; exit 1"],
    );
    eventually(20, "healthy", || hc.health("again")["Status"] == "healthy");
    eventually(20, "the restart", || {
        let state = hc.inspect("again");
        state["RestartCount"] == 1 && state["State"]["Status"] == "running"
    });
    let health = hc.health("again");
    assert_eq!(health["Status"], "starting", "{health}");
    assert!(health["Log"].as_array().unwrap().is_empty(), "{health}");
    assert!(hc.ps_row("again").contains("(health: starting)"));
    eventually(20, "healthy again", || {
        hc.health("again")["Status"] == "healthy"
    });
}

/// A check of a rootless container enters its user namespace too.
#[test]
fn a_rootless_containers_check_runs_in_its_user_namespace() {
    let Some(hc) = Hc::new() else { return };
    let Some(setpriv) = testkit::require_tool("setpriv") else {
        return;
    };
    use std::os::unix::fs::PermissionsExt;
    const UID: u32 = 65534;
    let top = tempfile::Builder::new()
        .prefix("cradle-health-user-")
        .tempdir()
        .unwrap();
    let dir = top.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = dir.join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(UID), Some(UID)).unwrap();
    let Some(init) = common::init() else { return };
    common::copy_file(&init, &dir.join("cradle-init"), 0o755);
    let launcher = dir.join("launcher");
    common::copy_file(&hc.kit.launcher, &launcher, 0o755);
    let image = dir.join("image.tar");
    common::copy_file(&hc.kit.image, &image, 0o644);
    let run = |args: &[&str]| {
        Command::new(&setpriv)
            .args(["--reuid", &UID.to_string(), "--regid", &UID.to_string()])
            .arg("--clear-groups")
            .arg(&launcher)
            .args(args)
            .env("HOME", &home)
            .env_remove("CRADLE_ROOT")
            .env_remove("XDG_DATA_HOME")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let image = image.display().to_string();
    let out = run(&[
        "run",
        "-d",
        "--name",
        "mine",
        "--health-cmd",
        "echo $(id -u) $(hostname)",
        "--health-interval",
        "200ms",
        &image,
        "sleep",
        "1000",
    ]);
    assert!(out.status.success(), "{out:?}");
    let id = stdout(&out).trim().to_string();
    let health = || {
        let out = run(&["inspect", "mine"]);
        let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        all[0]["State"]["Health"].clone()
    };
    let result = std::panic::catch_unwind(|| {
        eventually(20, "healthy", || health()["Status"] == "healthy");
        assert_eq!(health()["Log"][0]["Output"], format!("0 {}\n", &id[..12]));
    });
    let out = run(&["rm", "-f", "mine"]);
    assert!(out.status.success(), "{out:?}");
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
