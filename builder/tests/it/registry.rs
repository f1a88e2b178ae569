//! Registry: `builder push` and `builder pull` against Debian's
//! `docker-registry` started here on 127.0.0.1 (plain, with htpasswd basic
//! auth, and behind a test proxy that does the Bearer token dance or flips
//! a byte in blobs); skopeo and podman read what was pushed.

use crate::support::builder_bin;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// podman here runs only with runc and these limits.
const CONTAINERS_CONF: &str = "[engine]\nruntime = \"runc\"\n[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n";

/// A `docker-registry` on a free port of 127.0.0.1, with its storage and
/// log in a temporary directory; killed and removed when dropped.
struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Registry {
    /// None (after [`testkit::require_tool`]) when docker-registry is missing.
    /// With `tls`, it serves https with a certificate for 127.0.0.1 signed
    /// by a CA made here ([`Registry::ca`]).
    fn start(htpasswd: Option<(&str, &str)>, tls: bool) -> Option<Registry> {
        let program = testkit::require_tool("docker-registry")?;
        let dir = tempfile::Builder::new()
            .prefix("cradle-registry-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if tls {
            let (cert, key) = make_certificates(dir.path());
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        if let Some((user, password)) = htpasswd {
            let hash = bcrypt::hash(password, 5).unwrap();
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, format!("{user}:{hash}\n")).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: cradle-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(program)
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let registry = Registry { child, port, dir };
        wait_for_port(port);
        Some(registry)
    }

    /// The CA that signed a TLS registry's certificate (PEM).
    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The access log's request lines so far (`"PATCH /v2/… HTTP/1.1"`).
    fn requests(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap();
        log.lines()
            .filter_map(|l| l.split_once("] \"").map(|(_, r)| r))
            .filter_map(|r| r.split_once(" HTTP/").map(|(req, _)| req.to_string()))
            .collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA (`DIR/ca.pem`) and a server certificate for 127.0.0.1 it signed;
/// returns the server's certificate and key files.
fn make_certificates(dir: &Path) -> (PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (cert_file, key_file) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&cert_file, server.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    (cert_file, key_file)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The default image (`cargo xtask build-image`).
fn image() -> Option<PathBuf> {
    testkit::require_artifact("images/default.tar", "cargo xtask build-image")
}

/// Runs `builder ARGS` with a private cache and credential file.
fn builder(home: &Path, args: &[&str]) -> Output {
    Command::new(builder_bin())
        .args(args)
        .env("CRADLE_CACHE_DIR", home.join("cache"))
        .env("REGISTRY_AUTH_FILE", home.join("auth.json"))
        .env("HOME", home)
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("DOCKER_CONFIG")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Checks a failure: non-zero exit and one line on stderr that contains `what`.
fn failed_with(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "succeeded: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.contains(what), "`{what}` not in: {stderr}");
    stderr
}

fn write_auth(home: &Path, host: &str, user: &str, password: &str) {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let json = format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#);
    std::fs::write(home.join("auth.json"), json).unwrap();
}

fn archive_digest(path: &Path) -> String {
    builder::archive::ImageArchive::open(path)
        .unwrap()
        .image(None)
        .unwrap()
        .id
}

#[test]
fn push_then_pull_by_tag_and_by_digest_gives_the_same_manifest() {
    let (Some(image), Some(registry)) = (image(), Registry::start(None, false)) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let reference = format!("{}/cradle/default:v1", registry.host());
    let pushed = ok(&builder(
        home.path(),
        &["push", image.to_str().unwrap(), &reference],
    ));
    assert_eq!(pushed, archive_digest(&image));

    let by_tag = home.path().join("by-tag.tar");
    let pulled = ok(&builder(
        home.path(),
        &["pull", &reference, "-o", by_tag.to_str().unwrap()],
    ));
    assert_eq!(pulled, pushed);
    assert_eq!(archive_digest(&by_tag), pushed);

    let by_digest = home.path().join("by-digest.tar");
    let reference = format!("{}/cradle/default@{pushed}", registry.host());
    let pulled = ok(&builder(
        home.path(),
        &["pull", &reference, "-o", by_digest.to_str().unwrap()],
    ));
    assert_eq!(pulled, pushed);
    assert_eq!(archive_digest(&by_digest), pushed);
}

#[test]
fn second_push_uploads_no_blob_and_another_repository_mounts_them() {
    let (Some(image), Some(registry)) = (image(), Registry::start(None, false)) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let image = image.to_str().unwrap();
    let uploads = |r: &Registry| {
        r.requests()
            .into_iter()
            .filter(|req| req.contains("/blobs/uploads/") && !req.contains("mount="))
            .count()
    };
    // Chunks of 1 MiB: the 3.7 MB rootfs layer goes up in PATCHes.
    let first = format!("{}/cradle/a:v1", registry.host());
    ok(&builder(
        home.path(),
        &["push", "--chunk-mib", "1", image, &first],
    ));
    let patches = registry
        .requests()
        .iter()
        .filter(|r| r.starts_with("PATCH "))
        .count();
    assert!(patches >= 4, "{:#?}", registry.requests());
    let before = uploads(&registry);
    assert!(before > 0);

    let out = builder(home.path(), &["push", image, &first]);
    ok(&out);
    assert_eq!(uploads(&registry), before, "{:#?}", registry.requests());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("0 blobs uploaded, 0 mounted, 3 already there")
    );

    let second = format!("{}/cradle/b:v1", registry.host());
    let out = builder(home.path(), &["push", image, &second]);
    ok(&out);
    assert_eq!(uploads(&registry), before, "{:#?}", registry.requests());
    let mounts = registry
        .requests()
        .iter()
        .filter(|r| r.contains("mount="))
        .count();
    assert_eq!(mounts, 3, "{:#?}", registry.requests());
}

#[test]
fn skopeo_copies_what_was_pushed_with_the_same_digest() {
    let (Some(image), Some(skopeo), Some(registry)) = (
        image(),
        testkit::require_tool("skopeo"),
        Registry::start(None, false),
    ) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let reference = format!("{}/cradle/default:v1", registry.host());
    let pushed = ok(&builder(
        home.path(),
        &["push", image.to_str().unwrap(), &reference],
    ));
    let digest_file = home.path().join("digest");
    let out = Command::new(skopeo)
        .args(["copy", "--src-tls-verify=false", "--digestfile"])
        .arg(&digest_file)
        .arg(format!("docker://{reference}"))
        .arg(format!(
            "oci-archive:{}",
            home.path().join("copy.tar").display()
        ))
        .output()
        .unwrap();
    ok(&out);
    assert_eq!(
        std::fs::read_to_string(&digest_file).unwrap().trim(),
        pushed
    );
}

#[test]
fn corrupted_blob_is_refused_naming_it_and_nothing_is_left() {
    let (Some(image), Some(registry)) = (image(), Registry::start(None, false)) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let reference = format!("{}/cradle/default:v1", registry.host());
    ok(&builder(
        home.path(),
        &["push", image.to_str().unwrap(), &reference],
    ));
    let proxy = Proxy::start(registry.port, Mode::FlipBlobByte);
    let out_dir = home.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let output = out_dir.join("pulled.tar");
    let via_proxy = format!("127.0.0.1:{}/cradle/default:v1", proxy.port);
    let out = builder(
        home.path(),
        &["pull", &via_proxy, "-o", output.to_str().unwrap()],
    );
    let stderr = failed_with(&out, "refusing blob `sha256:");
    assert!(stderr.contains(&via_proxy), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");

    // `launcher run REF` pulls into its cache: refused the same way, and
    // nothing is left in the cache's images.
    let Some(launcher) = testkit::require_artifact("debug/launcher", "cargo build -p launcher")
    else {
        return;
    };
    let root = home.path().join("root");
    let out = Command::new(launcher)
        .arg("run")
        .arg(&via_proxy)
        .env("CRADLE_ROOT", &root)
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    failed_with(&out, "refusing blob `sha256:");
    let images = root.join("images");
    let left: Vec<_> = std::fs::read_dir(&images)
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", images.display());
}

#[test]
fn basic_auth_with_right_and_wrong_credentials() {
    let (Some(image), Some(registry)) =
        (image(), Registry::start(Some(("alice", "s3cret")), false))
    else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let image = image.to_str().unwrap();
    let reference = format!("{}/cradle/default:v1", registry.host());
    let out = builder(home.path(), &["push", image, &reference]);
    failed_with(
        &out,
        &format!("refused access to `{reference}` anonymously"),
    );

    write_auth(home.path(), &registry.host(), "alice", "wrong");
    let out = builder(home.path(), &["push", image, &reference]);
    failed_with(
        &out,
        &format!("refused access to `{reference}` as user `alice`"),
    );

    write_auth(home.path(), &registry.host(), "alice", "s3cret");
    let pushed = ok(&builder(home.path(), &["push", image, &reference]));
    let output = home.path().join("pulled.tar");
    let pulled = ok(&builder(
        home.path(),
        &["pull", &reference, "-o", output.to_str().unwrap()],
    ));
    assert_eq!(pulled, pushed);
}

#[test]
fn https_with_basic_auth_trusts_the_given_ca_only() {
    let (Some(image), Some(registry)) = (image(), Registry::start(Some(("alice", "s3cret")), true))
    else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let image = image.to_str().unwrap();
    let ca = registry.ca();
    let ca = ca.to_str().unwrap();
    write_auth(home.path(), &registry.host(), "alice", "s3cret");
    let reference = format!("{}/cradle/default:v1", registry.host());
    let out = builder(home.path(), &["push", image, &reference]);
    let stderr = failed_with(&out, &format!("reaching registry `{}`", registry.host()));
    assert!(stderr.contains("certificate"), "{stderr}");

    let pushed = ok(&builder(
        home.path(),
        &["push", "--ca-cert", ca, image, &reference],
    ));
    let output = home.path().join("pulled.tar");
    let output = output.to_str().unwrap();
    let pulled = ok(&builder(
        home.path(),
        &["pull", "--ca-cert", ca, &reference, "-o", output],
    ));
    assert_eq!(pulled, pushed);
    assert!(
        registry
            .requests()
            .iter()
            .any(|r| r.starts_with("PUT /v2/cradle/default/manifests/v1")),
        "{:#?}",
        registry.requests()
    );
}

#[test]
fn bearer_token_from_the_challenge_realm() {
    let (Some(image), Some(registry)) = (image(), Registry::start(None, false)) else {
        return;
    };
    let proxy = Proxy::start(registry.port, Mode::Bearer);
    let home = tempfile::tempdir().unwrap();
    let image = image.to_str().unwrap();
    let host = format!("127.0.0.1:{}", proxy.port);
    let reference = format!("{host}/cradle/default:v1");
    write_auth(home.path(), &host, "bob", "wrong");
    let out = builder(home.path(), &["push", image, &reference]);
    failed_with(
        &out,
        &format!("refused access to `{reference}` as user `bob`"),
    );

    write_auth(home.path(), &host, "bob", "hunter2");
    let pushed = ok(&builder(home.path(), &["push", image, &reference]));
    let output = home.path().join("pulled.tar");
    let pulled = ok(&builder(
        home.path(),
        &["pull", &reference, "-o", output.to_str().unwrap()],
    ));
    assert_eq!(pulled, pushed);
    let tokens = proxy.noted();
    assert!(
        tokens.iter().all(|q| q.contains("service=cradle-test")),
        "{tokens:?}"
    );
    assert!(
        tokens
            .iter()
            .any(|q| q.contains("scope=repository%3Acradle%2Fdefault%3Apull%2Cpush")),
        "{tokens:?}"
    );
}

#[test]
fn missing_tag_and_unreachable_registry_give_one_clear_message() {
    let Some(registry) = Registry::start(None, false) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let output = home.path().join("x.tar");
    let missing = format!("{}/cradle/nothing:here", registry.host());
    let out = builder(
        home.path(),
        &["pull", &missing, "-o", output.to_str().unwrap()],
    );
    failed_with(&out, &format!("no image `{missing}` in the registry"));

    let unreachable = format!("127.0.0.1:{}/cradle/default:v1", free_port());
    let out = builder(
        home.path(),
        &["pull", &unreachable, "-o", output.to_str().unwrap()],
    );
    let stderr = failed_with(&out, "reaching registry `127.0.0.1:");
    assert!(
        stderr.contains(&unreachable) && stderr.contains("Connection refused"),
        "{stderr}"
    );
    assert!(!output.exists());
}

#[test]
fn podman_runs_the_pushed_image_with_our_init_as_pid_1() {
    let Some(podman) = testkit::require_tool("podman") else {
        return;
    };
    if !testkit::require(testkit::is_root(), "podman is set up for root here") {
        return;
    }
    let (Some(image), Some(probe), Some(registry)) = (
        image(),
        testkit::require_artifact("static/probe", "cargo xtask build-probe"),
        Registry::start(None, false),
    ) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let reference = format!(
        "{}/cradle/podman-{}:v1",
        registry.host(),
        std::process::id()
    );
    ok(&builder(
        home.path(),
        &["push", image.to_str().unwrap(), &reference],
    ));
    let conf = home.path().join("containers.conf");
    std::fs::write(&conf, CONTAINERS_CONF).unwrap();
    let registries = home.path().join("registries.conf");
    std::fs::write(
        &registries,
        format!(
            "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
            registry.host()
        ),
    )
    .unwrap();
    let run = |podman_args: &[&str], args: &[&str]| {
        Command::new(&podman)
            .arg("run")
            .arg("--rm")
            .arg("-v")
            .arg(format!("{}:/probe:ro", probe.display()))
            .args(podman_args)
            .arg(&reference)
            .args(args)
            .env("CONTAINERS_CONF", &conf)
            .env("CONTAINERS_REGISTRIES_CONF", &registries)
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let report = ok(&run(&[], &["/probe", "report"]));
    assert!(
        report.contains("\npid1=/sbin/cradle-init -- /probe report\n"),
        "{report}"
    );
    assert!(report.contains("\nppid=1\n"), "{report}");
    assert_eq!(run(&[], &["/probe", "exit", "7"]).status.code(), Some(7));

    // Our init as podman's own (catatonit's command line): podman binds it
    // at /run/podman-init and starts `/run/podman-init -- CMD`.
    let init = testkit::require_artifact("static/cradle-init", "cargo xtask build-init");
    let Some(init) = init else { return };
    let init = init.to_str().unwrap();
    let with_init = ["--init", "--init-path", init, "--entrypoint", "/probe"];
    let report = ok(&run(&with_init, &["report"]));
    assert!(
        report.contains("\npid1=/run/podman-init -- /probe report\n"),
        "{report}"
    );
    assert_eq!(run(&with_init, &["exit", "9"]).status.code(), Some(9));
    let _ = Command::new(&podman)
        .args(["rmi", "--force", &reference])
        .env("CONTAINERS_CONF", &conf)
        .output();
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Flips the last byte of every blob body it passes on.
    FlipBlobByte,
    /// Wants `Authorization: Bearer <TOKEN>`, and hands out TOKEN at
    /// `/token` for bob:hunter2, as a registry's token server does.
    Bearer,
    /// Answers the first GET of each path with 503.
    Flaky,
}

const TOKEN: &str = "cradle-test-token";

/// An HTTP/1.1 proxy in front of the registry, one request per connection.
/// `noted`: the token queries (Bearer) or the paths failed once (Flaky).
struct Proxy {
    port: u16,
    noted: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Proxy {
    fn start(upstream: u16, mode: Mode) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let noted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = noted.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, upstream, port, mode, &seen);
                });
            }
        });
        Proxy { port, noted }
    }

    fn noted(&self) -> Vec<String> {
        self.noted.lock().unwrap().clone()
    }
}

fn serve(
    mut conn: TcpStream,
    upstream: u16,
    port: u16,
    mode: Mode,
    noted: &std::sync::Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let (head, body) = read_request(&mut conn)?;
    let request_line = head.lines().next().unwrap_or_default().to_string();
    let path = request_line
        .split(' ')
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            })
            .map(|(_, v)| v.trim().to_string())
    };
    if mode == Mode::Flaky && request_line.starts_with("GET ") {
        let mut seen = noted.lock().unwrap();
        if !seen.contains(&path) {
            seen.push(path.clone());
            let answer = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            return conn.write_all(answer.as_bytes());
        }
    }
    if mode == Mode::Bearer {
        if let Some(query) = path.strip_prefix("/token?") {
            noted.lock().unwrap().push(query.to_string());
            use base64::Engine as _;
            let good = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("bob:hunter2")
            );
            let answer = if header("authorization").as_deref() == Some(good.as_str()) {
                let body = format!(r#"{{"token":"{TOKEN}"}}"#);
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string()
            };
            return conn.write_all(answer.as_bytes());
        }
        if header("authorization").as_deref() != Some(&format!("Bearer {TOKEN}")) {
            let answer = format!(
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"cradle-test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            return conn.write_all(answer.as_bytes());
        }
    }
    // Forward, asking the registry to close after answering; Host is kept,
    // so the upload Locations it returns point back at the proxy.
    let mut forwarded: Vec<String> = head
        .lines()
        .filter(|l| {
            let name = l.split(':').next().unwrap_or_default().to_ascii_lowercase();
            !l.is_empty() && name != "connection" && name != "authorization"
        })
        .map(str::to_string)
        .collect();
    forwarded.push("Connection: close".into());
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(format!("{}\r\n\r\n", forwarded.join("\r\n")).as_bytes())?;
    up.write_all(&body)?;
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;
    let is_blob_get = request_line.starts_with("GET ") && path.contains("/blobs/sha256:");
    if mode == Mode::FlipBlobByte
        && is_blob_get
        && response.starts_with(b"HTTP/1.1 200")
        && let Some(last) = response.last_mut()
    {
        *last ^= 0x01;
    }
    conn.write_all(&response)
}

/// The request head (as text) and its body (Content-Length bytes).
fn read_request(conn: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut data = Vec::new();
    let mut buf = [0u8; 64 << 10];
    let end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = conn.read(&mut buf)?;
        // 0x16: a TLS handshake (the client checking for https); hang up,
        // as a plain-http server does.
        if n == 0 || (data.is_empty() && buf[0] == 0x16) {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        })
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = data[end + 4..].to_vec();
    while body.len() < length {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    Ok((head, body))
}

#[test]
fn launcher_runs_a_registry_reference_pulled_once_into_its_cache() {
    if !testkit::require(testkit::is_root(), "the launcher test runs as root here") {
        return;
    }
    let (Some(image), Some(launcher), Some(probe)) = (
        image(),
        testkit::require_artifact("debug/launcher", "cargo build -p launcher"),
        testkit::require_artifact("static/probe", "cargo xtask build-probe"),
    ) else {
        return;
    };
    let Some(registry) = Registry::start(None, false) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let reference = format!("{}/cradle/default:v1", registry.host());
    ok(&builder(
        home.path(),
        &["push", image.to_str().unwrap(), &reference],
    ));
    let run = |args: &[&str]| {
        Command::new(&launcher)
            .arg("run")
            .arg("-v")
            .arg(format!("{}:/probe:ro", probe.display()))
            .arg(&reference)
            .args(args)
            .env("CRADLE_ROOT", home.path().join("root"))
            .env("REGISTRY_AUTH_FILE", home.path().join("auth.json"))
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let report = ok(&run(&["/probe", "report"]));
    assert!(
        report.contains("\npid1=/sbin/cradle-init -- /probe report\n"),
        "{report}"
    );
    let missing = Command::new(&launcher)
        .arg("run")
        .arg(format!("{}/cradle/none:x", registry.host()))
        .env("CRADLE_ROOT", home.path().join("root"))
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(125));
    failed_with(&missing, "in the registry (manifest unknown)");
    drop(registry);
    // The registry is gone: the second run uses the cached pull.
    assert_eq!(run(&["/probe", "exit", "3"]).status.code(), Some(3));
}

/// `image` rewritten so that its index.json points at an image index
/// (multi-platform style) that holds its manifest, for this platform.
fn nested_index_archive(image: &Path, out: &Path) -> String {
    use sha2::Digest as _;
    let mut inner = tar::Archive::new(std::fs::File::open(image).unwrap());
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for entry in inner.entries().unwrap() {
        let mut entry = entry.unwrap();
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().unwrap().to_string_lossy().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        files.push((name, data));
    }
    let (_, index) = files.iter().find(|(n, _)| n == "index.json").unwrap();
    let top: serde_json::Value = serde_json::from_slice(index).unwrap();
    let nested = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": top["manifests"],
    }))
    .unwrap();
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&nested)));
    let outer = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest,
            "size": nested.len(),
        }],
    }))
    .unwrap();
    files.retain(|(n, _)| n != "index.json");
    files.push((format!("blobs/sha256/{}", &digest[7..]), nested));
    files.push(("index.json".into(), outer));
    let mut tar = tar::Builder::new(std::fs::File::create(out).unwrap());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    tar.finish().unwrap();
    digest
}

#[test]
fn index_is_pushed_with_its_manifests_and_pulled_for_this_platform() {
    let (Some(image), Some(registry)) = (image(), Registry::start(None, false)) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let multi = home.path().join("multi.tar");
    let index_digest = nested_index_archive(&image, &multi);
    let reference = format!("{}/cradle/multi:v1", registry.host());
    let pushed = ok(&builder(
        home.path(),
        &["push", multi.to_str().unwrap(), &reference],
    ));
    assert_eq!(pushed, index_digest);
    let output = home.path().join("pulled.tar");
    let pulled = ok(&builder(
        home.path(),
        &["pull", &reference, "-o", output.to_str().unwrap()],
    ));
    assert_eq!(pulled, archive_digest(&image));
    assert_eq!(archive_digest(&output), pulled);
}

/// An image built with `--sbom` pushes as its tagged index: the registry
/// then holds the SBOM's artifact manifest, whose subject is the image
/// (what `oras discover` and `cosign` query), and a pull by tag still
/// gives the image.
#[test]
fn an_image_with_an_sbom_pushes_with_it_and_pulls_as_the_image() {
    let (Some(init), Some(skopeo), Some(registry)) = (
        testkit::require_artifact("static/cradle-init", "cargo xtask build-init"),
        testkit::require_tool("skopeo"),
        Registry::start(None, false),
    ) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let archive = home.path().join("sbom.tar");
    let toml = testkit::workspace_root().join("images/default/image.toml");
    let built = ok(&builder(
        home.path(),
        &[
            "build",
            "--sbom",
            "--init",
            init.to_str().unwrap(),
            "-o",
            archive.to_str().unwrap(),
            toml.to_str().unwrap(),
        ],
    ));
    let reference = format!("{}/cradle/sbom:v1", registry.host());
    ok(&builder(
        home.path(),
        &["push", archive.to_str().unwrap(), &reference],
    ));
    let raw = |reference: &str| -> serde_json::Value {
        let out = Command::new(&skopeo)
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .output()
            .unwrap();
        serde_json::from_str(&ok(&out)).unwrap()
    };
    let index = raw(&reference);
    let sbom = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["artifactType"] == "application/spdx+json")
        .expect("the SBOM manifest in the pushed index");
    let sbom = raw(&format!(
        "{}/cradle/sbom@{}",
        registry.host(),
        sbom["digest"].as_str().unwrap()
    ));
    assert_eq!(sbom["subject"]["digest"], built.as_str());
    let pulled = home.path().join("pulled.tar");
    let digest = ok(&builder(
        home.path(),
        &["pull", &reference, "-o", pulled.to_str().unwrap()],
    ));
    assert_eq!(digest, built);
}

#[test]
fn refused_mount_falls_back_to_an_upload() {
    let (Some(image), Some(registry)) = (image(), Registry::start(None, false)) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    // The memo claims another repository has the layers; it does not, so
    // the registry answers each mount with 202 and an upload session.
    let layers = builder::archive::ImageArchive::open(&image)
        .unwrap()
        .image(None)
        .unwrap()
        .layers;
    let known: serde_json::Map<String, serde_json::Value> = layers
        .iter()
        .map(|l| (l.digest.clone(), serde_json::json!(["ghost/repo"])))
        .collect();
    std::fs::create_dir_all(home.path().join("cache")).unwrap();
    std::fs::write(
        home.path().join("cache/registry-blobs.json"),
        serde_json::to_vec(&serde_json::json!({ registry.host(): known })).unwrap(),
    )
    .unwrap();
    let reference = format!("{}/cradle/fresh:v1", registry.host());
    let out = builder(home.path(), &["push", image.to_str().unwrap(), &reference]);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("3 blobs uploaded, 0 mounted"), "{stderr}");
    let mounts = registry
        .requests()
        .iter()
        .filter(|r| r.contains("mount=") && r.contains("from=ghost%2Frepo"))
        .count();
    assert_eq!(mounts, 2, "{:#?}", registry.requests());
}

#[test]
fn transient_failures_of_gets_are_tried_again() {
    let (Some(image), Some(registry)) = (image(), Registry::start(None, false)) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let reference = format!("{}/cradle/default:v1", registry.host());
    let pushed = ok(&builder(
        home.path(),
        &["push", image.to_str().unwrap(), &reference],
    ));
    let proxy = Proxy::start(registry.port, Mode::Flaky);
    let via_proxy = format!("127.0.0.1:{}/cradle/default:v1", proxy.port);
    let output = home.path().join("pulled.tar");
    let pulled = ok(&builder(
        home.path(),
        &["pull", &via_proxy, "-o", output.to_str().unwrap()],
    ));
    assert_eq!(pulled, pushed);
    // The manifest and the three blobs each failed once.
    assert_eq!(proxy.noted().len(), 4, "{:?}", proxy.noted());
}

/// A `docker save` archive has no OCI manifest: push makes one for it
/// (its config and plain-tar layer as they are), and what is pulled back
/// is the same image.
#[test]
fn pushes_a_docker_save_archive() {
    let Some(registry) = Registry::start(None, false) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let layer = crate::support::Tar::new()
        .dir("etc/", 0o755)
        .file("etc/greeting", b"from docker save\n")
        .bytes();
    let saved = home.path().join("saved.tar");
    crate::support::docker_save(
        &saved,
        &layer,
        serde_json::json!({"Cmd": ["cat", "/etc/greeting"]}),
        "saved:v1",
    );
    let reference = format!("{}/cradle/saved:v1", registry.host());
    let pushed = ok(&builder(
        home.path(),
        &["push", saved.to_str().unwrap(), &reference],
    ));
    let pulled_to = home.path().join("pulled.tar");
    let pulled = ok(&builder(
        home.path(),
        &["pull", &reference, "-o", pulled_to.to_str().unwrap()],
    ));
    assert_eq!(pulled, pushed);
    let original = builder::archive::ImageArchive::open(&saved)
        .unwrap()
        .image(None)
        .unwrap();
    let archive = builder::archive::ImageArchive::open(&pulled_to).unwrap();
    let image = archive.image(None).unwrap();
    assert_eq!(image.config_digest, original.config_digest);
    assert_eq!(image.layers.len(), 1);
    assert_eq!(
        image.layers[0].digest,
        format!("sha256:{}", crate::support::sha256_hex(&layer))
    );
    let mut bytes = Vec::new();
    archive
        .verified_layer(&image.layers[0])
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    assert!(bytes == layer, "the layer changed on the way");
}

/// `[base] source = "docker://…"`: pulled, its layers at the bottom, and
/// the manifest names what the tag pointed to (image-spec's base
/// annotations), so a tag that moves later does not hide what was built.
#[test]
fn a_registry_base_is_pulled_and_pinned_by_digest_in_the_annotations() {
    let Some(registry) = Registry::start(None, false) else {
        return;
    };
    let ws = crate::support::Workspace::new();
    let layer = crate::support::Tar::new()
        .dir("etc/", 0o755)
        .file("etc/greeting", b"from the registry\n")
        .bytes();
    let saved = ws.dir.path().join("saved.tar");
    crate::support::docker_save(
        &saved,
        &layer,
        serde_json::json!({"Cmd": ["cat", "/etc/greeting"]}),
        "saved:v1",
    );
    let reference = format!("{}/cradle/base:v1", registry.host());
    let pushed = ok(&builder(
        ws.dir.path(),
        &["push", saved.to_str().unwrap(), &reference],
    ));
    let toml = ws.dir.path().join("image.toml");
    std::fs::write(
        &toml,
        format!("tag = \"localhost/cradle-test/on-registry:1\"\n[base]\nsource = \"docker://{reference}\"\n"),
    )
    .unwrap();
    let def = builder::ImageDef::load(&toml).unwrap();
    let built = builder::build(&def, &ws.options("image.tar")).unwrap();
    let archive = builder::archive::ImageArchive::open(&built.output).unwrap();
    let image = archive.image(None).unwrap();
    assert_eq!(
        image.layers[0].digest,
        format!("sha256:{}", crate::support::sha256_hex(&layer))
    );
    let top = archive.index().unwrap().manifests()[0].clone();
    let manifest: oci_spec::image::ImageManifest = serde_json::from_slice(
        &archive
            .read_blob(top.digest().as_ref(), top.size())
            .unwrap(),
    )
    .unwrap();
    let annotations = manifest.annotations().clone().unwrap();
    assert_eq!(annotations["org.opencontainers.image.base.digest"], pushed);
    assert_eq!(annotations["org.opencontainers.image.base.name"], reference);
    let config = image.config.config().clone().unwrap();
    assert_eq!(config.cmd().clone().unwrap(), ["cat", "/etc/greeting"]);
}
