//! `builder build -f Containerfile`: what each instruction puts in the
//! image and its config, multi-stage builds (only the stages the target
//! needs), `.dockerignore`, ADD, and the hostile context through the
//! Containerfile path: each attack refused naming the file, the line and
//! the instruction, leaving nothing behind.

use crate::support::{Server, Tar, Workspace, builder_bin, sha256_hex};
use builder::containerfile::Request;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A build context with a Containerfile, and a workspace for the output.
struct Ctx {
    ws: Workspace,
    dir: PathBuf,
}

impl Ctx {
    fn new(containerfile: &str) -> Ctx {
        let ws = Workspace::new();
        let dir = ws.dir.path().join("context");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("Containerfile"), containerfile).unwrap();
        Ctx { ws, dir }
    }

    fn write(&self, rel: &str, data: &[u8]) -> &Ctx {
        let path = self.dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
        self
    }

    fn request(&self) -> Request {
        Request {
            file: self.dir.join("Containerfile"),
            context: self.dir.clone(),
            tag: Some("localhost/cradle-test/cfile:latest".into()),
            sbom: false,
            ..Request::default()
        }
    }

    fn build(&self, name: &str) -> builder::Result<builder::Built> {
        self.build_with(&self.request(), name)
    }

    fn build_with(&self, req: &Request, name: &str) -> builder::Result<builder::Built> {
        builder::containerfile::build(req, &self.ws.options(name))
    }

    /// The error of a build that must fail, after checking it left nothing.
    fn refused(&self) -> String {
        let err = self.build("image.tar").unwrap_err();
        let leftovers: Vec<_> = std::fs::read_dir(self.ws.out()).unwrap().collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        chain(&err)
    }
}

/// The error and its causes, as the builder prints them.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(e) = cause {
        text += &format!(": {e}");
        cause = e.source();
    }
    text
}

/// An entry of the image: kind, mode, uid, gid, contents or link target.
type Entry = (char, u32, u64, u64, Vec<u8>);

/// The image's files, all layers applied (a later layer's entry wins).
fn image_files(archive: &Path) -> BTreeMap<String, Entry> {
    let image = builder::inspect::inspect(archive).unwrap();
    let mut out = BTreeMap::new();
    for layer in &image.layers {
        let mut outer = tar::Archive::new(std::fs::File::open(archive).unwrap());
        for entry in outer.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.path().unwrap().to_string_lossy() != layer.entry {
                continue;
            }
            let mut inner = tar::Archive::new(flate2::read::GzDecoder::new(&mut entry));
            for file in inner.entries().unwrap() {
                let mut file = file.unwrap();
                let h = file.header().clone();
                let mut data = Vec::new();
                file.read_to_end(&mut data).unwrap();
                if let Some(link) = file.link_name_bytes() {
                    data = link.to_vec();
                }
                let path = file.path().unwrap().display().to_string();
                let path = path.trim_end_matches('/').to_string();
                out.insert(
                    path,
                    (
                        h.entry_type().as_byte() as char,
                        h.mode().unwrap(),
                        h.uid().unwrap(),
                        h.gid().unwrap(),
                        data,
                    ),
                );
            }
        }
    }
    out
}

fn config(archive: &Path) -> serde_json::Value {
    let image = builder::inspect::inspect(archive).unwrap();
    serde_json::to_value(&image.config).unwrap()["config"].clone()
}

#[test]
fn instructions_set_the_files_and_the_config() {
    let ctx = Ctx::new(
        "# syntax=docker/dockerfile:1\n\
         ARG APP=web\n\
         FROM scratch\n\
         ARG APP\n\
         ARG PORT=8080\n\
         ENV APP_NAME=$APP \\\n\
         \x20   GREETING=\"hello there\"\n\
         ENV OLD style value\n\
         WORKDIR /srv\n\
         WORKDIR ${APP}\n\
         COPY --chown=100:101 --chmod=0750 run.sh ./\n\
         COPY [\"conf/app.conf\", \"/etc/${APP}/\"]\n\
         LABEL org.opencontainers.image.title=\"$APP app\" version=1\n\
         EXPOSE $PORT 53/udp\n\
         USER 100:101\n\
         STOPSIGNAL SIGQUIT\n\
         HEALTHCHECK CMD true\n\
         ENTRYPOINT [\"/srv/web/run.sh\"]\n\
         CMD --verbose $APP_NAME\n",
    );
    ctx.write("run.sh", b"#!/bin/sh\n")
        .write("conf/app.conf", b"port=8080\n");
    let mut req = ctx.request();
    req.build_args.insert("PORT".into(), "9090".into());
    let built = ctx.build_with(&req, "image.tar").unwrap();
    let files = image_files(&built.output);
    assert_eq!(
        files["srv/web/run.sh"],
        ('0', 0o750, 100, 101, b"#!/bin/sh\n".to_vec())
    );
    assert_eq!(files["etc/web/app.conf"].4, b"port=8080\n");
    assert_eq!(files["srv/web"].0, '5', "WORKDIR made its directory");
    assert!(files.contains_key("sbin/cradle-init"));
    let config = config(&built.output);
    assert_eq!(
        config["Env"],
        serde_json::json!([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "APP_NAME=web",
            "GREETING=hello there",
            "OLD=style value"
        ])
    );
    assert_eq!(config["WorkingDir"], "/srv/web");
    assert_eq!(config["User"], "100:101");
    assert_eq!(config["StopSignal"], "SIGQUIT");
    assert_eq!(
        config["ExposedPorts"],
        serde_json::json!({"53/udp": {}, "9090/tcp": {}})
    );
    assert_eq!(
        config["Labels"]["org.opencontainers.image.title"],
        "web app"
    );
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/sbin/cradle-init", "--", "/srv/web/run.sh"])
    );
    // The shell form runs under /bin/sh -c, unexpanded: the shell expands it.
    assert_eq!(
        config["Cmd"],
        serde_json::json!(["/bin/sh", "-c", "--verbose $APP_NAME"])
    );
    let warnings = built.warnings.join("\n");
    assert!(
        warnings.contains("line 17: `HEALTHCHECK`: ignored"),
        "{warnings}"
    );
}

#[test]
fn no_init_leaves_the_init_out_and_the_entrypoint_as_written() {
    let ctx = Ctx::new("FROM scratch\nCOPY a /a\nENTRYPOINT [\"/a\"]\n");
    ctx.write("a", b"a");
    let opts = builder::Options {
        no_init: true,
        init: PathBuf::from("/nonexistent"),
        ..ctx.ws.options("image.tar")
    };
    let built = builder::containerfile::build(&ctx.request(), &opts).unwrap();
    let files = image_files(&built.output);
    assert!(!files.contains_key("sbin/cradle-init"), "{files:?}");
    assert_eq!(
        config(&built.output)["Entrypoint"],
        serde_json::json!(["/a"])
    );
}

#[test]
fn same_inputs_same_digest_and_a_changed_copy_input_changes_it() {
    let ctx = Ctx::new(
        "FROM scratch AS build\nCOPY src/ /src/\nFROM scratch\nCOPY --from=build /src/app /app\nCOPY conf /conf\n",
    );
    ctx.write("src/app", b"v1").write("conf", b"c");
    let a = ctx.build("a.tar").unwrap();
    // Touched, same bytes: mtimes are clamped, the digest stays.
    ctx.write("conf", b"c");
    let b = ctx.build("b.tar").unwrap();
    assert_eq!(a.digest, b.digest);
    assert_eq!(
        std::fs::read(&a.output).unwrap(),
        std::fs::read(&b.output).unwrap()
    );
    ctx.write("src/app", b"v2");
    let c = ctx.build("c.tar").unwrap();
    assert_ne!(a.digest, c.digest);
    assert_eq!(image_files(&c.output)["app"].4, b"v2");
}

#[test]
fn builds_only_the_stages_the_target_needs() {
    let ctx = Ctx::new(
        "FROM scratch AS broken\n\
         COPY missing /x\n\
         FROM scratch AS tools\n\
         COPY tool /bin/tool\n\
         FROM tools AS app\n\
         COPY app /app\n\
         FROM scratch\n\
         COPY --from=app /bin/tool /app /out/\n\
         COPY --from=1 / /whole/\n",
    );
    ctx.write("tool", b"tool").write("app", b"app");
    // `broken` is never built: nothing needs it.
    let built = ctx.build("image.tar").unwrap();
    let files = image_files(&built.output);
    assert_eq!(files["out/tool"].4, b"tool");
    assert_eq!(files["out/app"].4, b"app");
    assert_eq!(files["whole/bin/tool"].4, b"tool");
    assert!(!files.contains_key("x"));
    // An intermediate stage has no init, the target has one.
    assert!(!files.contains_key("whole/sbin/cradle-init"));
    assert!(files.contains_key("sbin/cradle-init"));
    // --target stops at `app`: FROM tools gives it tools' files.
    let mut req = ctx.request();
    req.target = Some("app".into());
    let built = ctx.build_with(&req, "app.tar").unwrap();
    let files = image_files(&built.output);
    assert_eq!(files["bin/tool"].4, b"tool");
    assert!(!files.contains_key("out"));
    // Asked for, the broken stage fails naming its stage and the source.
    req.target = Some("broken".into());
    let err = chain(&ctx.build_with(&req, "broken.tar").unwrap_err());
    assert!(
        err.contains("building stage `broken`") && err.contains("missing"),
        "{err}"
    );
}

#[test]
fn dockerignore_leaves_paths_out_of_copies_with_exceptions() {
    let ctx = Ctx::new("FROM scratch\nCOPY . /ctx/\n");
    ctx.write(
        ".dockerignore",
        b"# secrets and build output\n*.pem\ntarget\n**/*.log\n!keep.log\n",
    )
    .write("key.pem", b"secret")
    .write("app/main.sh", b"main")
    .write("app/debug.log", b"log")
    .write("keep.log", b"kept")
    .write("target/big", b"big");
    let built = ctx.build("image.tar").unwrap();
    let files: Vec<String> = image_files(&built.output)
        .into_keys()
        .filter(|p| p.starts_with("ctx/"))
        .collect();
    assert_eq!(
        files,
        [
            "ctx/.dockerignore",
            "ctx/Containerfile",
            "ctx/app",
            "ctx/app/main.sh",
            "ctx/keep.log"
        ]
    );
    // Named, an ignored file is not there at all.
    let ctx = Ctx::new("FROM scratch\nCOPY key.pem /key.pem\n");
    ctx.write(".dockerignore", b"*.pem\n")
        .write("key.pem", b"secret");
    let err = ctx.refused();
    assert!(
        err.contains("key.pem") && err.contains("matches nothing"),
        "{err}"
    );
}

#[test]
fn the_output_written_into_the_context_is_not_copied_into_itself() {
    let ctx = Ctx::new("FROM scratch\nCOPY . /ctx/\n");
    let mut opts = ctx.ws.options("x");
    opts.output = ctx.dir.join("app.tar");
    ctx.write("app.tar", b"an older build");
    let built = builder::containerfile::build(&ctx.request(), &opts).unwrap();
    let files = image_files(&built.output);
    assert!(
        files
            .keys()
            .all(|p| !p.contains("app.tar") && !p.contains(".cradle-")),
        "{files:?}"
    );
}

#[test]
fn add_unpacks_a_local_tarball_as_hostile_input() {
    let ctx = Ctx::new("FROM scratch\nADD site.tar.gz /srv/\nADD plain.txt /plain.txt\n");
    let tar = Tar::new()
        .dir("www/", 0o755)
        .file("www/index.html", b"<h1>hi</h1>")
        .gzip();
    ctx.write("site.tar.gz", &tar).write("plain.txt", b"plain");
    let built = ctx.build("image.tar").unwrap();
    let files = image_files(&built.output);
    assert_eq!(files["srv/www/index.html"].4, b"<h1>hi</h1>");
    assert_eq!(files["plain.txt"].4, b"plain");
    // A tarball that climbs out is refused before anything lands outside.
    let ctx = Ctx::new("FROM scratch\nADD evil.tar /srv/\n");
    let escape = ctx.ws.dir.path().join("escaped");
    let evil = Tar::new()
        .file("../../escaped", b"pwned")
        .file("ok", b"ok")
        .bytes();
    ctx.write("evil.tar", &evil);
    let err = ctx.refused();
    assert!(
        err.contains("line 2: `ADD`") && err.contains("`..`"),
        "{err}"
    );
    assert!(!escape.exists());
}

#[test]
fn add_of_a_url_needs_a_checksum_and_is_fetched_with_it() {
    let body = b"remote file".to_vec();
    let server = Server::start(body.clone());
    let url = server.url("/rootfs.tar.gz");
    let ctx = Ctx::new(&format!("FROM scratch\nADD {url} /dl/\n"));
    let err = ctx.refused();
    assert!(
        err.contains("line 2: `ADD`") && err.contains("--checksum=sha256:"),
        "{err}"
    );
    assert_eq!(server.hits("/rootfs.tar.gz"), 0);
    let wrong = "0".repeat(64);
    let ctx = Ctx::new(&format!(
        "FROM scratch\nADD --checksum=sha256:{wrong} {url} /dl/\n"
    ));
    let err = ctx.refused();
    assert!(err.contains("sha256"), "{err}");
    let sha = sha256_hex(&body);
    let ctx = Ctx::new(&format!(
        "FROM scratch\nADD --checksum=sha256:{sha} {url} /dl/\n"
    ));
    let built = ctx.build("image.tar").unwrap();
    let files = image_files(&built.output);
    assert_eq!(files["dl/rootfs.tar.gz"], ('0', 0o600, 0, 0, body));
}

/// Each attack through the Containerfile path: refused naming the file,
/// line and instruction (or the source, when the copy finds it), nothing
/// written to the output directory, nothing read from outside the context.
#[test]
fn a_hostile_context_is_refused_naming_the_line() {
    let cases: [(&str, &str, &[&str]); 8] = [
        ("COPY ../outside /x", "ln", &["line 2: `COPY`", "`..`"]),
        (
            "COPY /etc/passwd /x",
            "ln",
            &["line 2: `COPY`", "relative to the build context"],
        ),
        (
            "COPY sub/../../outside /x",
            "ln",
            &["line 2: `COPY`", "`..`"],
        ),
        ("ADD ../outside.tar /x/", "ln", &["line 2: `ADD`", "`..`"]),
        ("COPY passwd /x", "passwd", &["passwd", "symlink"]),
        ("COPY etc/ /x/", "etc", &["etc", "symlink"]),
        ("COPY etc/passwd /x", "etc", &["etc", "symlink"]),
        (
            "ADD linked.tar /x/",
            "linked.tar",
            &["linked.tar", "symlink"],
        ),
    ];
    for (line, link, want) in cases {
        let ctx = Ctx::new(&format!("FROM scratch\n{line}\n"));
        let outside = ctx.ws.dir.path().join("outside");
        std::fs::write(&outside, b"secret").unwrap();
        let target = match link {
            "passwd" => Path::new("/etc/passwd"),
            "etc" => Path::new("/etc"),
            _ => outside.as_path(),
        };
        std::os::unix::fs::symlink(target, ctx.dir.join(link)).unwrap();
        let err = match ctx.build("image.tar") {
            Ok(_) => panic!("{line}: built"),
            Err(_) => ctx.refused(),
        };
        assert!(
            err.contains("Containerfile") || err.contains(&ctx.dir.display().to_string()),
            "{line}: {err}"
        );
        for w in want {
            assert!(err.contains(w), "{line}: `{w}` not in {err}");
        }
    }
    // A symlink inside a copied directory is copied as the symlink it is:
    // it resolves in the container, never here.
    let ctx = Ctx::new("FROM scratch\nCOPY dir/ /d/\n");
    ctx.write("dir/file", b"f");
    std::os::unix::fs::symlink("/etc/shadow", ctx.dir.join("dir/link")).unwrap();
    let built = ctx.build("image.tar").unwrap();
    assert_eq!(
        image_files(&built.output)["d/link"],
        ('2', 0o777, 0, 0, b"/etc/shadow".to_vec())
    );
    // A .dockerignore that is a symlink is not followed.
    let ctx = Ctx::new("FROM scratch\nCOPY . /ctx/\n");
    std::os::unix::fs::symlink("/etc/passwd", ctx.dir.join(".dockerignore")).unwrap();
    let err = ctx.refused();
    assert!(err.contains(".dockerignore"), "{err}");
}

#[test]
fn unsupported_instructions_and_flags_are_refused_naming_the_line() {
    let cases = [
        (
            "SHELL [\"/bin/bash\", \"-c\"]",
            "line 2: `SHELL`: is not supported",
        ),
        ("ONBUILD RUN true", "line 2: `ONBUILD`: is not supported"),
        (
            "FROBNICATE x",
            "line 2: `FROBNICATE`: is not an instruction",
        ),
        (
            "RUN --mount=type=cache,target=/x true",
            "line 2: `RUN`: flag `--mount`",
        ),
        ("COPY --parents a /x/", "line 2: `COPY`: flag `--parents`"),
        ("COPY --chown=app a /a", "FROM scratch has no /etc/passwd"),
        ("COPY a b /x", "line 2: `COPY`: with several sources"),
        (
            "COPY --from=later a /a",
            "stage `later` is not an earlier stage",
        ),
        ("EXPOSE http", "line 2: `EXPOSE`: `http` is not PORT"),
        ("RUN <<EOF", "line 2: `RUN`: heredocs"),
    ];
    for (line, want) in cases {
        let ctx = Ctx::new(&format!(
            "FROM scratch AS first\n{line}\nFROM scratch AS later\n"
        ));
        ctx.write("a", b"a").write("b", b"b");
        let mut req = ctx.request();
        req.target = Some("first".into());
        let err = chain(&ctx.build_with(&req, "image.tar").unwrap_err());
        assert!(err.contains(want), "{line}: {err}");
        assert!(err.contains("Containerfile"), "{line}: {err}");
    }
}

#[test]
fn the_command_line_builds_with_build_args_tag_and_target() {
    let ctx =
        Ctx::new("ARG WHO=nobody\nFROM scratch AS first\nARG WHO\nCOPY $WHO /who\nFROM first\n");
    ctx.write("alice", b"alice").write("nobody", b"nobody");
    let out = ctx.ws.out().join("cli.tar");
    let run = |extra: &[&str]| {
        std::process::Command::new(builder_bin())
            .args(["build", "-f"])
            .arg(ctx.dir.join("Containerfile"))
            .args(extra)
            .arg("-o")
            .arg(&out)
            .arg("--init")
            .arg(ctx.ws.dir.path().join("init"))
            .arg(&ctx.dir)
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap()
    };
    let done = run(&[
        "--build-arg",
        "WHO=alice",
        "-t",
        "localhost/cli:1",
        "--target",
        "first",
    ]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let digest = String::from_utf8(done.stdout).unwrap();
    let image = builder::inspect::inspect(&out).unwrap();
    assert_eq!(digest.trim(), image.id);
    assert_eq!(image.tag.as_deref(), Some("localhost/cli:1"));
    assert_eq!(image_files(&out)["who"].4, b"alice");
    // -t names an image.toml's image too; without -o it says what is missing.
    let toml = ctx.dir.join("image.toml");
    std::fs::write(
        &toml,
        "tag = \"localhost/a:1\"\n[base]\nsource = \"scratch\"\n",
    )
    .unwrap();
    let with = |extra: &[&str]| {
        std::process::Command::new(builder_bin())
            .arg("build")
            .arg(&toml)
            .args(extra)
            .arg("--init")
            .arg(ctx.ws.dir.path().join("init"))
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap()
    };
    let done = with(&["-t", "localhost/b:2", "-o", out.to_str().unwrap()]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let tag = builder::inspect::inspect(&out).unwrap().tag;
    assert_eq!(tag.as_deref(), Some("localhost/b:2"));
    let missing = with(&[]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("give the archive to write with -o"));
    let bad = run(&["-t", "Not A Tag!!"]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && stderr.starts_with("builder: ") && stderr.contains("Not A Tag!!"),
        "{stderr}"
    );
}

/// A Containerfile build SIGKILLed at several moments (stages being
/// built, unpacked for `COPY --from`, copied) leaves its work directory
/// with the stages' archives; the next build reclaims all of it and gives
/// the image a build never killed gives.
#[test]
fn a_killed_multi_stage_build_is_reclaimed_by_the_next() {
    let ctx = Ctx::new(
        "FROM scratch AS one\nCOPY big /big\nFROM one AS two\nCOPY small /small\n\
         FROM scratch\nCOPY --from=two /big /small /out/\n",
    );
    // Not compressible: each stage takes a while to pack.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let big: Vec<u8> = (0..24 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    ctx.write("big", &big).write("small", b"small");
    let out = ctx.ws.out().join("image.tar");
    let build = || {
        let mut cmd = std::process::Command::new(builder_bin());
        cmd.args(["build", "-f"])
            .arg(ctx.dir.join("Containerfile"))
            .arg("-o")
            .arg(&out)
            .arg("--init")
            .arg(ctx.ws.dir.path().join("init"))
            .arg(&ctx.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd
    };
    let mut left_behind = 0;
    for delay_ms in [30, 150, 400, 900] {
        let mut child = build().spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
        left_behind += std::fs::read_dir(ctx.ws.out())
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".cradle-build-")
            })
            .count();
    }
    assert!(left_behind > 0, "no kill landed during a build");
    let done = build().status().unwrap();
    assert!(done.success());
    let names: Vec<String> = std::fs::read_dir(ctx.ws.out())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["image.tar"]);
    let whole = ctx.build("whole.tar").unwrap();
    assert_eq!(builder::inspect::inspect(&out).unwrap().id, whole.digest);
    assert_eq!(image_files(&out)["out/big"].4, big);
}

/// `--chown` names are the base image's: a user alone takes its primary
/// group; one the base does not have is an error naming it. The base's
/// /etc/passwd is read inside its rootfs (a symlinked /etc resolves there).
#[test]
fn chown_names_are_looked_up_in_the_base_image() {
    let ctx = Ctx::new(
        "FROM scratch AS base\nCOPY etc/ /real-etc/\nFROM scratch AS linked\n\
         COPY --from=base /real-etc/ /real-etc/\nCOPY root/ /\n\
         FROM linked\nCOPY --chown=app a /a\nCOPY --chown=app:staff a /b\nCOPY --chown=7:staff a /c\n",
    );
    ctx.write(
        "etc/passwd",
        b"root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/app:/bin/sh\n",
    )
    .write("etc/group", b"root:x:0:\nstaff:x:50:\n")
    .write("a", b"a");
    std::fs::create_dir(ctx.dir.join("root")).unwrap();
    std::os::unix::fs::symlink("/real-etc", ctx.dir.join("root/etc")).unwrap();
    let built = ctx.build("image.tar").unwrap();
    let files = image_files(&built.output);
    assert_eq!((files["a"].2, files["a"].3), (1000, 1001));
    assert_eq!((files["b"].2, files["b"].3), (1000, 50));
    assert_eq!((files["c"].2, files["c"].3), (7, 50));
    let ctx = Ctx::new(
        "FROM scratch AS base\nCOPY passwd /etc/passwd\nFROM base\nCOPY --chown=ghost a /a\n",
    );
    ctx.write("passwd", b"app:x:1000:1000::/:/bin/sh\n")
        .write("a", b"a");
    let err = ctx.refused();
    assert!(
        err.contains("line 4: `COPY`: `--chown=ghost`: user `ghost` is not in /etc/passwd"),
        "{err}"
    );
}

/// A tarball that ADD would unpack past CRADLE_MAX_COPY_SIZE is refused
/// while it unpacks, naming the line, and leaves nothing.
#[test]
fn add_of_a_tarball_larger_than_the_copy_limit_is_refused() {
    let ctx = Ctx::new("FROM scratch\nADD huge.tar /srv/\n");
    let huge = Tar::new().file("zeros", &vec![0u8; 64 << 10]).gzip();
    ctx.write("huge.tar", &huge);
    let out = ctx.ws.out().join("image.tar");
    let done = std::process::Command::new(builder_bin())
        .args(["build", "-f"])
        .arg(ctx.dir.join("Containerfile"))
        .arg("-o")
        .arg(&out)
        .arg("--init")
        .arg(ctx.ws.dir.path().join("init"))
        .arg(&ctx.dir)
        .env("CRADLE_MAX_COPY_SIZE", "16K")
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(!done.status.success(), "{stderr}");
    assert!(
        stderr.contains("line 2: `ADD`") && stderr.contains("limit of 16384 bytes"),
        "{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(ctx.ws.out()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}
