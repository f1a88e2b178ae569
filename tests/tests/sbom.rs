//! End to end: an image built with `--sbom` (an image index holding the
//! image manifest and the SBOM's artifact manifest) still runs in the
//! launcher with cradle-init as PID 1, loads and runs in podman, and
//! skopeo reads it and finds the SBOM referring to the image.

mod common;

use std::process::Command;

/// podman here runs only with runc and these limits.
const CONTAINERS_CONF: &str = "[engine]\nruntime = \"runc\"\n[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_launcher_runs_an_image_with_an_sbom_attached() {
    let Some(kit) = common::Kit::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(archive) =
        common::default_built_with_sbom(dir.path(), "localhost/cradle-test/sbom-launcher:1")
    else {
        return;
    };
    let out = kit
        .cmd(&[])
        .arg(&archive)
        .args(["sh", "-c", "echo \"pid1=$(cat /proc/1/comm)\"; exit 7"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pid1=cradle-init\n");
}

#[test]
fn skopeo_reads_it_and_finds_the_sbom_referring_to_the_image() {
    let Some(skopeo) = testkit::require_tool("skopeo") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(archive) =
        common::default_built_with_sbom(dir.path(), "localhost/cradle-test/sbom-skopeo:1")
    else {
        return;
    };
    let location = format!("oci-archive:{}", archive.display());
    let inspected: serde_json::Value =
        serde_json::from_str(&run(Command::new(&skopeo).args(["inspect", &location]))).unwrap();
    assert_eq!(inspected["Layers"].as_array().unwrap().len(), 2);
    // The tagged index: the image for this platform, and the SBOM.
    let index: serde_json::Value = serde_json::from_str(&run(
        Command::new(&skopeo).args(["inspect", "--raw", &location])
    ))
    .unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2, "{index:#}");
    let image = &manifests[0];
    assert_eq!(image["platform"]["os"], "linux");
    let sbom = &manifests[1];
    assert_eq!(sbom["artifactType"], "application/spdx+json");
    assert_eq!(sbom["platform"]["os"], "unknown");
    // Its manifest names the image as its subject.
    let layout = dir.path().join("layout");
    run(Command::new(&skopeo).args([
        "copy",
        "--all",
        &location,
        &format!("oci:{}:copied", layout.display()),
    ]));
    let digest = sbom["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let bytes = std::fs::read(layout.join("blobs/sha256").join(digest)).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(manifest["subject"]["digest"], image["digest"]);
    assert_eq!(manifest["layers"][0]["mediaType"], "application/spdx+json");
}

#[test]
fn podman_loads_and_runs_an_image_with_an_sbom_attached() {
    let Some(podman) = testkit::require_tool("podman") else {
        return;
    };
    if !testkit::require(testkit::is_root(), "podman is set up for root here") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tag = format!(
        "localhost/cradle-test/sbom-podman-{}:latest",
        std::process::id()
    );
    let Some(archive) = common::default_built_with_sbom(dir.path(), &tag) else {
        return;
    };
    let conf = dir.path().join("containers.conf");
    std::fs::write(&conf, CONTAINERS_CONF).unwrap();
    let podman = |args: &[&str]| {
        let mut cmd = Command::new(&podman);
        cmd.args(args).env("CONTAINERS_CONF", &conf);
        cmd
    };
    let loaded = run(&mut podman(&["load", "-i", archive.to_str().unwrap()]));
    let result = std::panic::catch_unwind(|| {
        assert!(
            loaded.contains(&tag),
            "podman load named it otherwise: {loaded}"
        );
        let out = podman(&["run", "--rm", &tag, "sh", "-c", "cat /proc/1/comm; exit 7"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(7), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "cradle-init\n");
    });
    let _ = podman(&["rmi", "--force", &tag]).output();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
