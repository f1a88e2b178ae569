//! cradle-init as a supervisor inside a container run by the launcher:
//! definitions in `/etc/cradle/services.d` (bind-mounted here, as the
//! builder's `[services.NAME]` would put them in the image), the control
//! socket at its default path, output prefixed on the container's stdout.

mod common;

use common::Kit;

#[test]
fn the_init_supervises_services_in_a_container_and_answers_ctl() {
    let Some(kit) = Kit::new() else { return };
    let defs = tempfile::tempdir().unwrap();
    std::fs::write(
        defs.path().join("web.toml"),
        "command = [\"sh\", \"-c\", \"echo hello from web; echo >&3; exec sleep 1000\"]\n\
         depends_on = [\"setup\"]\nready = { fd = 3 }\n",
    )
    .unwrap();
    std::fs::write(
        defs.path().join("setup.toml"),
        "type = \"oneshot\"\ncommand = [\"sh\", \"-c\", \"echo set up\"]\n",
    )
    .unwrap();
    let volume = format!("{}:/etc/cradle/services.d:ro", defs.path().display());
    let out = kit
        .cmd(&["-v", &volume])
        .arg(&kit.image)
        .args(["sh", "-c", "/sbin/cradle-init ctl status; exit 4"])
        .output()
        .expect("running the launcher");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "the workload's status: {out:?}");
    let lines: Vec<&str> = stdout.lines().collect();
    let at = |want: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(want))
            .unwrap_or_else(|| panic!("no `{want}` in {stdout}"))
    };
    // A oneshot's output is relayed before its dependents start.
    assert!(
        at("[setup] set up") < at("[web] hello from web"),
        "{stdout}"
    );
    at("NAME STATE PID");
    assert!(lines.iter().any(|l| l.starts_with("web up ")), "{stdout}");
    assert!(lines.contains(&"setup done - - 0 exit 0"), "{stdout}");
}
