//! Interop: the archive passes `skopeo inspect`, loads with `podman load`,
//! and `podman run` prints from a shell with our init as PID 1.

use std::path::Path;
use std::process::Command;

/// podman here runs only with runc and these limits.
const CONTAINERS_CONF: &str = "[engine]\nruntime = \"runc\"\n[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n";

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Builds `images/default` under a tag of its own, with the real static init.
fn build_default(dir: &Path, tag: &str) -> Option<builder::Built> {
    let init = testkit::require_artifact("static/cradle-init", "cargo xtask build-init")?;
    let toml = testkit::workspace_root().join("images/default/image.toml");
    let mut def = builder::ImageDef::load(&toml).unwrap();
    def.tag = tag.to_string();
    let opts = builder::Options {
        init,
        output: dir.join("default.tar"),
        fetch: builder::fetch::Options::new(dir.join("cache")),
        epoch: 0,
        run: Default::default(),
    };
    Some(builder::build(&def, &opts).unwrap())
}

#[test]
fn skopeo_inspects_the_archive() {
    let Some(skopeo) = testkit::require_tool("skopeo") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(built) = build_default(dir.path(), "localhost/cradle-test/skopeo:latest") else {
        return;
    };
    let json = run(Command::new(skopeo)
        .arg("inspect")
        .arg(format!("oci-archive:{}", built.output.display())));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["Digest"], built.digest.as_str());
    assert_eq!(json["Layers"].as_array().unwrap().len(), 2);
}

#[test]
fn podman_loads_and_runs_it_with_our_init_as_pid_1() {
    let Some(podman) = testkit::require_tool("podman") else {
        return;
    };
    if !testkit::require(testkit::is_root(), "podman is set up for root here") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("localhost/cradle-test/podman-{}:latest", std::process::id());
    let Some(built) = build_default(dir.path(), &tag) else {
        return;
    };
    let conf = dir.path().join("containers.conf");
    std::fs::write(&conf, CONTAINERS_CONF).unwrap();
    let podman = |args: &[&str]| {
        let mut cmd = Command::new(&podman);
        cmd.args(args).env("CONTAINERS_CONF", &conf);
        cmd
    };
    let loaded = run(&mut podman(&["load", "-i", built.output.to_str().unwrap()]));
    let result = std::panic::catch_unwind(|| {
        assert!(
            loaded.contains(&tag),
            "podman load named it otherwise: {loaded}"
        );
        let script = "echo hello from $(cat /proc/1/comm) as pid $$; ls /sbin/cradle-init";
        let out = run(&mut podman(&["run", "--rm", &tag, "sh", "-c", script]));
        let (first, rest) = out.split_once('\n').unwrap_or((&out, ""));
        let pid = first
            .strip_prefix("hello from cradle-init as pid ")
            .unwrap_or_else(|| panic!("{out}"));
        assert_ne!(pid, "1", "the shell ran as PID 1: the init is not in front");
        assert_eq!(rest, "/sbin/cradle-init\n");
    });
    let _ = podman(&["rmi", "--force", &tag]).output();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// An image with an image base and copies (`images/hello-app`: the default
/// image built first, a script and its config copied in) loads and runs in
/// podman: its three layers stack, its settings come through.
#[test]
fn podman_runs_an_application_image_on_a_definition_base() {
    let Some(podman) = testkit::require_tool("podman") else {
        return;
    };
    if !testkit::require(testkit::is_root(), "podman is set up for root here") {
        return;
    }
    let Some(init) = testkit::require_artifact("static/cradle-init", "cargo xtask build-init")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let toml = testkit::workspace_root().join("images/hello-app/image.toml");
    let mut def = builder::ImageDef::load(&toml).unwrap();
    let tag = format!("localhost/cradle-test/hello-{}:latest", std::process::id());
    def.tag = tag.clone();
    let opts = builder::Options {
        init,
        output: dir.path().join("hello-app.tar"),
        fetch: builder::fetch::Options::new(dir.path().join("cache")),
        epoch: 0,
        run: Default::default(),
    };
    let built = builder::build(&def, &opts).unwrap();
    let conf = dir.path().join("containers.conf");
    std::fs::write(&conf, CONTAINERS_CONF).unwrap();
    let podman = |args: &[&str]| {
        let mut cmd = Command::new(&podman);
        cmd.args(args).env("CONTAINERS_CONF", &conf);
        cmd
    };
    run(&mut podman(&["load", "-i", built.output.to_str().unwrap()]));
    let result = std::panic::catch_unwind(|| {
        let out = run(&mut podman(&["run", "--rm", &tag]));
        let pid = out
            .strip_prefix("Hello, cradle! (pid ")
            .and_then(|rest| rest.strip_suffix(", in /app)\n"))
            .unwrap_or_else(|| panic!("{out}"));
        assert_ne!(
            pid, "1",
            "the script ran as PID 1: the init is not in front"
        );
        let out = run(&mut podman(&["run", "--rm", &tag, "/app/hello.sh", "x"]));
        assert!(out.ends_with("argument: x\n"), "{out}");
    });
    let _ = podman(&["rmi", "--force", &tag]).output();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
