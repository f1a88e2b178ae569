//! End to end: an interactive shell with `-it` under a real terminal (tmux),
//! and `-it` with piped input.

mod common;

use common::Tmux;
use std::path::Path;
use std::time::{Duration, Instant};

fn wait_file(path: &Path, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("`{}` was not written", path.display());
}

#[test]
fn interactive_shell_types_interrupts_and_exits_with_its_status() {
    let Some(kit) = common::Kit::new() else {
        return;
    };
    if testkit::require_tool("tmux").is_none() {
        return;
    }
    let dir = kit.root.path();
    let script = dir.join("session.sh");
    std::fs::write(
        &script,
        format!(
            "stty -a > {d}/before\nenv -u RUST_BACKTRACE CRADLE_ROOT={d} {l} run -it --hostname tty -v {p}:/probe:ro {i} /bin/sh\necho $? > {d}/status\nstty -a > {d}/after\nsleep 60\n",
            d = dir.display(),
            l = kit.launcher.display(),
            p = kit.probe.display(),
            i = kit.image.display(),
        ),
    )
    .unwrap();
    let tmux = Tmux::start(format!("cradle-test-{}", std::process::id()), &script);
    // busybox ash shows "/ # ", dash "# ".
    tmux.wait_for("#", 10);
    tmux.send(&["read h < /etc/hostname; echo typed-$((6*7)) $h", "Enter"]);
    tmux.wait_for("typed-42 tty", 5);
    // The terminal is a pty of the container's own devpts.
    tmux.send(&["ls -l /proc/self/fd/0 && ls /dev/pts", "Enter"]);
    tmux.wait_for("-> /dev/pts/0", 5);
    // The pty has the terminal's size, and follows it (SIGWINCH).
    tmux.send(&["/probe winsize", "Enter"]);
    tmux.wait_for("winsize 30x100", 5);
    let ok = tmux
        .cmd()
        .args(["resize-window", "-t", "t", "-x", "90", "-y", "20"])
        .status()
        .unwrap();
    assert!(ok.success());
    std::thread::sleep(Duration::from_millis(300));
    tmux.send(&["clear; /probe winsize", "Enter"]);
    tmux.wait_for("winsize 20x90", 5);
    tmux.send(&["sleep 100", "Enter"]);
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    tmux.send(&["C-c"]);
    tmux.send(&["echo after-$((1+1))", "Enter"]);
    tmux.wait_for("after-2", 5);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "Ctrl-C did not stop sleep"
    );
    tmux.send(&["exit 5", "Enter"]);
    assert_eq!(wait_file(&dir.join("status"), 10).trim(), "5");
    let after = wait_file(&dir.join("after"), 5);
    let before = std::fs::read_to_string(dir.join("before")).unwrap();
    // The size changed with the resize above; every mode must be back.
    let modes = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(
        modes(&before),
        modes(&after),
        "terminal settings not restored"
    );
}

#[test]
fn tty_passes_on_all_of_a_large_piped_input() {
    use std::io::Write;
    let Some(kit) = common::Kit::new() else {
        return;
    };
    // 1 MiB in lines of 64 bytes: far more than the pty's buffers hold, and
    // lines short enough for the canonical mode's 4096-byte limit.
    let line = format!("{:>63}\n", "0123456789abcdef");
    let input = line.repeat((1 << 20) / line.len());
    assert_eq!(input.len(), 1 << 20);
    let mut child = kit
        .cmd(&["-i", "-t"])
        .arg(&kit.image)
        .args(["sh", "-c", "wc -c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Written from a thread while the output (the echo, then the count) is
    // read: the launcher copies both ways at once.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut text).map(|_| text)
    });
    // Input lost mid-line leaves the ^D of the end ending that line, not
    // the input: wc would wait for ever.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`wc -c` did not see the end of its input");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    writer.join().unwrap().unwrap();
    let text = reader.join().unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    let text = String::from_utf8_lossy(&text);
    // The count ends the output. The terminal's echo of the input comes
    // before it and may be cut short (n_tty drops echoes when its echo
    // buffer overflows), so the count can share a line with a partial one.
    let last = text.lines().rev().find(|l| !l.trim().is_empty());
    assert!(
        last.is_some_and(|l| l.trim_end().ends_with("1048576")),
        "last line {last:?}"
    );
}
