//! Containerfiles with RUN steps, run for real: `images/web-app` built
//! from its image.toml and from its Containerfile is one image, which the
//! launcher and podman run; buildah builds the same Containerfile into an
//! image that runs the same under podman; multi-stage builds make a
//! program in one stage (with busybox's tools, and with gcc in a Debian
//! stage) and copy it into `scratch` plus the init.

use crate::support::builder_bin;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// podman and buildah here run only with runc and these limits.
const CONTAINERS_CONF: &str = "[engine]\nruntime = \"runc\"\n[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n";

/// What `images/web-app` prints when it runs as built.
const WEB_APP_SAYS: &str = "web-app: Hello from cradle on port 8080\n\
                            user 1000:1000 in /app\n\
                            defaults: greeting=\"Hello from cradle\"\n";

/// A scratch directory, the binaries, and the default image as an archive.
struct Bench {
    dir: tempfile::TempDir,
    launcher: PathBuf,
    init: PathBuf,
    default: PathBuf,
}

impl Bench {
    /// None (after saying why) without root, the launcher or the init.
    fn new() -> Option<Bench> {
        if !testkit::require(testkit::is_root(), "needs root to run RUN steps and podman") {
            return None;
        }
        let launcher = testkit::require_artifact("debug/launcher", "cargo build -p launcher")?;
        let init = testkit::require_artifact("static/cradle-init", "cargo xtask build-init")?;
        let dir = tempfile::Builder::new()
            .prefix("cradle-cfile-")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("containers.conf"), CONTAINERS_CONF).unwrap();
        let mut bench = Bench {
            dir,
            launcher,
            init,
            default: PathBuf::new(),
        };
        let toml = testkit::workspace_root().join("images/default/image.toml");
        bench.default = bench.path("default.tar");
        bench.build(&[toml.as_os_str()], &bench.default);
        Some(bench)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `builder build ARGS… -o OUTPUT`: the digest it prints.
    fn build(&self, args: &[&std::ffi::OsStr], output: &Path) -> String {
        let out = Command::new(builder_bin())
            .env("CRADLE_CACHE_DIR", self.path("cache"))
            .env("CRADLE_LAUNCHER", &self.launcher)
            .env_remove("RUST_BACKTRACE")
            .env_remove("CRADLE_ROOT")
            .arg("build")
            .args(args)
            .arg("--init")
            .arg(&self.init)
            .arg("-o")
            .arg(output)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "building {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// `builder build -f images/web-app/Containerfile` on the default image.
    fn build_web_app(&self, output: &Path, tag: &str) -> String {
        let dir = testkit::workspace_root().join("images/web-app");
        let base = format!("BASE=oci-archive:{}", self.default.display());
        let file = dir.join("Containerfile");
        self.build(
            &[
                "-t".as_ref(),
                tag.as_ref(),
                "-f".as_ref(),
                file.as_os_str(),
                "--build-arg".as_ref(),
                base.as_ref(),
                dir.as_os_str(),
            ],
            output,
        )
    }

    /// `launcher run IMAGE ARGS…` in a private store: its stdout.
    fn launch(&self, image: &Path, args: &[&str]) -> String {
        let store = tempfile::tempdir().unwrap();
        let out = Command::new(&self.launcher)
            .env("CRADLE_ROOT", store.path())
            .env_remove("RUST_BACKTRACE")
            .arg("run")
            .arg(image)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "running {image:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// `podman`/`buildah` with this machine's containers.conf.
    fn tool(&self, tool: &Path) -> Command {
        let mut cmd = Command::new(tool);
        cmd.env("CONTAINERS_CONF", self.path("containers.conf"))
            .stdin(Stdio::null());
        cmd
    }
}

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

/// Runs `body`, then removes the `images` from podman's store, even when
/// `body` panicked.
fn with_images(podman: &Path, bench: &Bench, images: &[&str], body: impl FnOnce()) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
    for image in images {
        let _ = bench.tool(podman).args(["rmi", "--force", image]).output();
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn web_app_defined_both_ways_is_one_image_the_launcher_and_podman_run() {
    let Some(bench) = Bench::new() else {
        return;
    };
    let Some(podman) = testkit::require_tool("podman") else {
        return;
    };
    let toml = testkit::workspace_root().join("images/web-app/image.toml");
    let from_toml = bench.build(&[toml.as_os_str()], &bench.path("toml.tar"));
    let tag = format!(
        "localhost/cradle-test/web-app-{}:latest",
        std::process::id()
    );
    let from_file = bench.build_web_app(&bench.path("cfile.tar"), &tag);
    // The manifest, which names no tag.
    assert_eq!(from_toml, from_file, "the two definitions differ");
    // Again without the step cache: the same digest.
    std::fs::remove_dir_all(bench.path("cache")).unwrap();
    assert_eq!(
        bench.build_web_app(&bench.path("again.tar"), &tag),
        from_file
    );
    assert_eq!(bench.launch(&bench.path("cfile.tar"), &[]), WEB_APP_SAYS);
    let loaded = run(bench
        .tool(&podman)
        .args(["load", "-i"])
        .arg(bench.path("cfile.tar")));
    assert!(loaded.contains(&tag), "{loaded}");
    with_images(&podman, &bench, &[&tag], || {
        let out = run(bench.tool(&podman).args(["run", "--rm", &tag]));
        assert_eq!(out, WEB_APP_SAYS);
        let out = run(bench
            .tool(&podman)
            .args(["run", "--rm", &tag, "/app/app.sh", "x"]));
        assert!(out.ends_with("arguments: x\n"), "{out}");
    });
}

/// What a container of `image` sees and is set to, for comparing two
/// images: its files, environment, user, directory, and the config's
/// entrypoint, cmd and exposed ports.
fn what_it_sees(bench: &Bench, podman: &Path, image: &str) -> (String, String) {
    let script = "id -u; id -g; pwd; env | grep -v '^HOSTNAME=' | sort; \
                  stat -c '%n %F %a %u %g %s' /app /app/* /etc/web-app /etc/web-app/* \
                  /var/lib/web-app /var/lib/web-app/*; \
                  cat /var/lib/web-app/defaults /etc/web-app/app.conf; \
                  ls /sbin/cradle-init; cat /proc/1/comm";
    let seen = run(bench
        .tool(podman)
        .args(["run", "--rm", "--entrypoint", "/sbin/cradle-init", image])
        .args(["--", "/bin/sh", "-c", script]));
    let config = run(bench.tool(podman).args([
        "image",
        "inspect",
        "--format",
        "{{json .Config.Entrypoint}} {{json .Config.Cmd}} {{.Config.User}} \
         {{.Config.WorkingDir}} {{json .Config.Env}} {{json .Config.ExposedPorts}}",
        image,
    ]));
    (seen, config)
}

#[test]
fn buildah_builds_the_same_containerfile_into_an_image_that_runs_the_same() {
    let Some(bench) = Bench::new() else {
        return;
    };
    let (Some(podman), Some(buildah)) = (
        testkit::require_tool("podman"),
        testkit::require_tool("buildah"),
    ) else {
        return;
    };
    let id = std::process::id();
    let our_tag = format!("localhost/cradle-test/ours-{id}:latest");
    let their_tag = format!("localhost/cradle-test/buildah-{id}:latest");
    let ours = bench.path("ours.tar");
    bench.build_web_app(&ours, &our_tag);
    run(bench.tool(&podman).args(["load", "-i"]).arg(&ours));
    with_images(&podman, &bench, &[&our_tag, &their_tag], || {
        let dir = testkit::workspace_root().join("images/web-app");
        let base = format!("BASE=oci-archive:{}", bench.default.display());
        run(bench
            .tool(&buildah)
            .args(["bud", "--quiet", "--layers=false", "--isolation=chroot"])
            .args(["--build-arg", &base, "-t", &their_tag, "-f"])
            .arg(dir.join("Containerfile"))
            .arg(&dir));
        let (our_view, our_config) = what_it_sees(&bench, &podman, &our_tag);
        let (their_view, their_config) = what_it_sees(&bench, &podman, &their_tag);
        assert_eq!(our_view, their_view);
        assert_eq!(our_config, their_config);
        // Not vacuous: it ran the app's environment as its user, under our init.
        assert!(
            our_view.starts_with("1000\n1000\n/app\n") && our_view.contains("APP_NAME=web-app"),
            "{our_view}"
        );
        assert!(
            our_view.ends_with("/sbin/cradle-init\ncradle-init\n"),
            "{our_view}"
        );
        assert!(
            our_config
                .starts_with("[\"/sbin/cradle-init\",\"--\"] [\"/app/app.sh\"] 1000:1000 /app"),
            "{our_config}"
        );
    });
}

/// One stage makes a program with the base's shell tools, the last one is
/// `scratch` with the program and busybox copied from it; our init is
/// added. The launcher and podman run it. (The same with a C compiler is
/// the next test.)
#[test]
fn a_multi_stage_build_copies_what_one_stage_made_into_scratch_plus_the_init() {
    let Some(bench) = Bench::new() else {
        return;
    };
    let Some(busybox) = testkit::require_tool("busybox") else {
        return;
    };
    let Some(podman) = testkit::require_tool("podman") else {
        return;
    };
    let context = bench.path("context");
    std::fs::create_dir(&context).unwrap();
    std::fs::copy(&busybox, context.join("busybox")).unwrap();
    std::fs::write(
        context.join("greet.in"),
        "echo \"built by @WHO@ in stage one\"\n",
    )
    .unwrap();
    std::fs::write(
        context.join("Containerfile"),
        format!(
            "FROM oci-archive:{} AS build\n\
             ARG WHO=nobody\n\
             COPY busybox greet.in /src/\n\
             WORKDIR /src\n\
             RUN mkdir -p /out/bin && \\\n\
             \x20   {{ echo '#!/bin/busybox sh'; sed \"s/@WHO@/$WHO/\" greet.in; }} > /out/bin/greet && \\\n\
             \x20   chmod 0755 /out/bin/greet && cp busybox /out/bin/busybox\n\
             FROM scratch\n\
             COPY --from=build /out/bin/ /bin/\n\
             ENTRYPOINT [\"/bin/greet\"]\n",
            bench.default.display()
        ),
    )
    .unwrap();
    let image = bench.path("multi.tar");
    let tag = format!("localhost/cradle-test/multi-{}:latest", std::process::id());
    bench.build(
        &[
            "-t".as_ref(),
            tag.as_ref(),
            "--build-arg".as_ref(),
            "WHO=cradle".as_ref(),
            "-f".as_ref(),
            context.join("Containerfile").as_os_str(),
            context.as_os_str(),
        ],
        &image,
    );
    let files = builder::inspect::inspect(&image).unwrap();
    assert_eq!(files.layers.len(), 2, "the copy and the init: {files:?}");
    assert_eq!(bench.launch(&image, &[]), "built by cradle in stage one\n");
    run(bench.tool(&podman).args(["load", "-i"]).arg(&image));
    with_images(&podman, &bench, &[&tag], || {
        let out = run(bench.tool(&podman).args(["run", "--rm", &tag]));
        assert_eq!(out, "built by cradle in stage one\n");
    });
}

/// The multi-stage build real projects write: a C program compiled by gcc
/// in a Debian stage (debootstrap's minbase with gcc and libc6-dev, built
/// into an image by the builder), and only the static program copied into
/// `scratch` plus the init. It runs, takes its CMD and arguments, and a
/// second build without the cache is the same bytes.
#[test]
fn a_multi_stage_build_compiles_c_in_a_debian_stage_and_ships_only_the_program() {
    let Some(bench) = Bench::new() else {
        return;
    };
    let Some(tarball) = crate::support::debian_rootfs("debian-gcc", &["gcc", "libc6-dev"]) else {
        return;
    };
    let sha = crate::support::sha256_hex(&std::fs::read(&tarball).unwrap());
    let definition = bench.path("gcc.toml");
    std::fs::write(
        &definition,
        format!(
            "tag = \"localhost/cradle-test/debian-gcc:1\"\n[base]\nsource = \"{}\"\nsha256 = \"{sha}\"\n",
            tarball.display()
        ),
    )
    .unwrap();
    let gcc = bench.path("gcc.tar");
    bench.build(&["--no-init".as_ref(), definition.as_os_str()], &gcc);

    let context = bench.path("context");
    std::fs::create_dir(&context).unwrap();
    std::fs::write(
        context.join("hello.c"),
        "#include <stdio.h>\n\
         int main(int argc, char **argv) {\n\
         \x20   printf(\"hello, %s, from C built in stage one\\n\", argc > 1 ? argv[1] : \"nobody\");\n\
         \x20   return 0;\n\
         }\n",
    )
    .unwrap();
    std::fs::write(
        context.join("Containerfile"),
        format!(
            "FROM oci-archive:{} AS build\n\
             WORKDIR /src\n\
             COPY hello.c .\n\
             RUN mkdir /out && gcc -static -O2 -o /out/hello hello.c && /out/hello compiler\n\
             FROM scratch\n\
             COPY --from=build /out/hello /hello\n\
             ENTRYPOINT [\"/hello\"]\n\
             CMD [\"world\"]\n",
            gcc.display()
        ),
    )
    .unwrap();
    let file = context.join("Containerfile");
    let build = |out: &Path, extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> = extra.iter().map(|a| a.as_ref()).collect();
        args.extend([
            "-t".as_ref(),
            "localhost/cradle-test/hello-c:1".as_ref(),
            "-f".as_ref(),
            file.as_os_str(),
            context.as_os_str(),
        ]);
        bench.build(&args, out)
    };
    let image = bench.path("hello.tar");
    build(&image, &[]);
    let files = builder::inspect::inspect(&image).unwrap();
    assert_eq!(files.layers.len(), 2, "the program and the init: {files:?}");
    assert_eq!(
        bench.launch(&image, &[]),
        "hello, world, from C built in stage one\n"
    );
    assert_eq!(
        bench.launch(&image, &["cradle"]),
        "hello, cradle, from C built in stage one\n"
    );
    let again = bench.path("again.tar");
    build(&again, &["--no-cache"]);
    assert_eq!(
        std::fs::read(&image).unwrap(),
        std::fs::read(&again).unwrap(),
        "two builds of the same inputs differ"
    );
}
